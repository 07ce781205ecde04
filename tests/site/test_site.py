"""The built site works with no network, checked in headless Chromium.

Serves ``_build/html`` (build it first: ``make book``) on 127.0.0.1 and opens every HTML page in
Debian's ``/usr/bin/chromium`` driven by Playwright (no browser download). Any request to another
host is recorded and aborted, so the test means the same on a machine with internet access.

For every page: no failed request, no request off 127.0.0.1, no console error, no uncaught page
error, no Jupyter error output. Pages with math: MathJax typeset every formula and no raw TeX
delimiters are left in the visible text. Pages with widget state: every saved widget view is
rendered. Pages with matplotlib ``to_jshtml()`` scrubbers: "next frame" changes the frame.

What a reader sees (the measurements are in ``site_reader.py``): no progress-bar text; nothing
that looks like a control is dead (a saved widget view without a kernel); every page weighs at
most ``PAGE_WEIGHT_LIMIT``; no code block, display equation, table or figure is wider than the
1280 px text column; at a 390 px phone width the page does not scroll sideways and every
scrubber's controls are on screen. (Text outputs wider than the column, and figure scale, are
measured by ``site_reader.py`` but not yet asserted: those chapters' print statements and figure
style change only with a re-execution.) Search finds a chapter and its results show no raw TeX.

Screenshots of the chapter pages go to ``_build/screenshots/`` for a human to look at (at
1280 px, and ``*_390px.png`` at the phone width).

    make site                       # or: .venv/bin/pytest tests/site -m site
    KD_SITE_DIR=/path/to/html .venv/bin/pytest tests/site -m site   # check another build
"""
from __future__ import annotations

import functools
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from site_reader import CONTROLS_JS, OVERFLOW_JS, PAGE_WIDTH_JS, PROGRESS_JS, page_weight


pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[2]
HTML_DIR = Path(os.environ.get("KD_SITE_DIR", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = HTML_DIR.parent / "screenshots"  # _build/screenshots for the default build
CHROMIUM = os.environ.get("KD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# The chapter that must show a widget rendered from saved state and a to_jshtml scrubber.
WIDGET_CHAPTER = "book/01_soft_targets.html"
TIMEOUT_MS = 60_000  # generous: other jobs share this machine's two cores
# Bytes a page may load (itself, scripts, styles, fonts, images; uncompressed, as on disk).
# The heaviest chapter page loaded 6.8 MB (an icon script, the widget manager); 2.44 MB now
# (2026-12-03), with MathJax's 1.16 MB the largest part and figures as palette PNGs
# (book/_ext/site_images.py).
PAGE_WEIGHT_LIMIT = 2_500_000
PHONE = {"width": 390, "height": 844}


def _pages() -> list[str]:
    if not HTML_DIR.is_dir():
        return []
    return sorted(
        p.relative_to(HTML_DIR).as_posix()
        for p in HTML_DIR.rglob("*.html")
        if not any(part.startswith("_") for part in p.relative_to(HTML_DIR).parts)
    )


PAGES = _pages()


# --- fixtures ---------------------------------------------------------------------------------

class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass


@pytest.fixture(scope="module")
def base_url():
    if not HTML_DIR.is_dir():
        pytest.skip(f"{HTML_DIR} does not exist: build the site first (make book)")
    handler = functools.partial(_QuietHandler, directory=str(HTML_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not HTML_DIR.is_dir():
        pytest.skip(f"{HTML_DIR} does not exist: build the site first (make book)")
    if not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's package "
            "(apt-get install -y chromium; .ci/run does this) or set KD_CHROMIUM",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        yield browser
        browser.close()


class PageLog:
    """Everything a page did on the network and the console while it was open."""

    def __init__(self):
        self.requests: list[str] = []
        self.external: list[str] = []
        self.failed: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "javascript"):
        return True
    return parts.scheme in ("http", "https") and parts.hostname == "127.0.0.1"


@pytest.fixture
def open_page(browser, base_url):
    """Open a page of the site in a fresh browser context; return (page, log)."""
    contexts = []

    def _open(relpath: str, viewport=None):
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}, service_workers="block")
        contexts.append(context)
        log = PageLog()

        def route(route):
            url = route.request.url
            if _is_local(url):
                route.continue_()
            else:
                log.external.append(url)
                route.abort("blockedbyclient")

        context.route("**/*", route)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("request", lambda r: log.requests.append(r.url))
        page.on(
            "requestfailed",
            lambda r: log.failed.append(f"{r.url} ({r.failure})"),
        )
        page.on(
            "response",
            lambda r: log.failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None,
        )
        page.on(
            "console",
            lambda m: log.console_errors.append(f"{m.text} @ {m.location.get('url')}:{m.location.get('lineNumber')}")
            if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: log.page_errors.append(str(e)))
        page.goto(base_url + relpath, wait_until="load", timeout=TIMEOUT_MS)
        _settle(page)
        return page, log

    yield _open
    for context in contexts:
        context.close()


# --- helpers run in the page ------------------------------------------------------------------

WIDGET_VIEWS_JS = """() => {
  const state = document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
  const models = state ? Object.keys(JSON.parse(state.textContent).state || {}) : [];
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const expected = views.filter(v => models.includes(JSON.parse(v.textContent).model_id));
  const rendered = expected.filter(v => {
    const area = v.previousElementSibling;
    return area && area.classList.contains('widget-subarea') && area.querySelector('.jupyter-widgets');
  });
  return {views: views.length, expected: expected.length, rendered: rendered.length};
}"""

RAW_TEX_JS = r"""() => {
  // Visible text outside code, scripts and typeset math that still holds TeX delimiters.
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const hits = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!el || el.closest(skip)) continue;
    const text = node.textContent;
    if (/\$\$|\\\(|\\\)|\\\[|\\\]/.test(text) && el.offsetParent !== null) hits.push(text.trim().slice(0, 120));
  }
  return hits;
}"""


def _settle(page) -> None:
    """Wait until the page's scripts are done: network quiet, MathJax typeset, widgets drawn."""
    page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
    page.evaluate(
        """() => (window.MathJax && MathJax.startup && MathJax.startup.promise)
               ? MathJax.startup.promise.then(() => true) : false"""
    )
    counts = page.evaluate(WIDGET_VIEWS_JS)
    if counts["expected"]:
        try:
            page.wait_for_function(
                f"() => ({WIDGET_VIEWS_JS})().rendered >= {counts['expected']}", timeout=TIMEOUT_MS
            )
        except Exception:  # reported by the widget assertion, with the counts
            pass
    page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)


def _screenshot(page, relpath: str, suffix: str = "") -> None:
    if not relpath.startswith("book/"):
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = relpath[len("book/"):].replace("/", "__").removesuffix(".html") + suffix + ".png"
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


# --- tests -----------------------------------------------------------------------------------

def test_site_has_pages():
    if not HTML_DIR.is_dir():
        pytest.skip(f"{HTML_DIR} does not exist: build the site first (make book)")
    assert "index.html" in PAGES
    assert WIDGET_CHAPTER in PAGES, f"{WIDGET_CHAPTER} was not built"


@pytest.mark.parametrize("relpath", PAGES or ["(no site built)"])
def test_page_works_offline(open_page, relpath):
    if not PAGES:
        pytest.skip(f"{HTML_DIR} does not exist: build the site first (make book)")
    page, log = open_page(relpath)
    _screenshot(page, relpath)

    assert not log.external, f"requests to other hosts (blocked): {log.external}"
    assert not log.failed, f"failed requests: {log.failed}"
    assert not log.page_errors, f"uncaught JavaScript errors: {log.page_errors}"
    assert not log.console_errors, f"console errors: {log.console_errors}"

    error_outputs = page.locator(".output.traceback, .jupyter-widgets-error-widget, mjx-merror")
    assert error_outputs.count() == 0, (
        f"{error_outputs.count()} error output(s), the first: {error_outputs.first.inner_text()[:500]}"
    )

    math = page.locator("div.math, span.math")
    if math.count():
        untypeset = page.evaluate(
            "() => [...document.querySelectorAll('div.math, span.math')]"
            ".filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80))"
        )
        assert page.locator("mjx-container").count() > 0, "the page has math but MathJax typeset none"
        assert not untypeset, f"formulas MathJax did not typeset: {untypeset}"
    raw_tex = page.evaluate(RAW_TEX_JS)
    assert not raw_tex, f"raw TeX left in the visible text: {raw_tex}"

    widgets = page.evaluate(WIDGET_VIEWS_JS)
    assert widgets["rendered"] == widgets["expected"], (
        f"only {widgets['rendered']} of {widgets['expected']} saved widget views rendered"
    )

    for index in range(page.locator("div.animation").count()):
        _check_scrubber(page, page.locator("div.animation").nth(index))

    # What a reader sees.
    bars = page.evaluate(PROGRESS_JS)
    assert not bars, f"progress-bar text in the outputs: {bars[:3]} (execute with KD_PROGRESS=0)"
    if relpath != "search.html":  # the search page's form is live
        dead = page.evaluate(CONTROLS_JS)
        assert not dead, f"controls that need a kernel, dead on the site: {dead[:5]}"
    weight = page_weight(HTML_DIR, log.requests)
    assert weight <= PAGE_WEIGHT_LIMIT, f"the page loads {weight / 1e6:.2f} MB (limit {PAGE_WEIGHT_LIMIT / 1e6} MB)"
    wide = [hit for hit in page.evaluate(OVERFLOW_JS) if hit["kind"] != "output"]
    assert not wide, f"blocks wider than the text column at 1280 px (they scroll or are cut off): {wide[:3]}"


@pytest.mark.parametrize("relpath", PAGES or ["(no site built)"])
def test_page_fits_a_phone_screen(open_page, relpath):
    if not PAGES:
        pytest.skip(f"{HTML_DIR} does not exist: build the site first (make book)")
    page, log = open_page(relpath, viewport=PHONE)
    _screenshot(page, relpath, "_390px")
    width = page.evaluate(PAGE_WIDTH_JS)
    assert width["scroll"] <= width["viewport"], (
        f"the page scrolls {width['scroll'] - width['viewport']} px sideways at {PHONE['width']} px")
    clipped = page.evaluate(
        """() => [...document.querySelectorAll('div.animation button, div.animation input')]
             .filter(el => { const r = el.getBoundingClientRect();
                             return r.left < 0 || r.right > document.documentElement.clientWidth; })
             .map(el => el.outerHTML.slice(0, 60))""")
    assert not clipped, f"scrubber controls off screen at {PHONE['width']} px: {clipped[:3]}"


def test_search_finds_chapters_and_shows_no_raw_tex(open_page):
    if "search.html" not in PAGES:
        pytest.skip("search.html not built")
    page, log = open_page("search.html?q=temperature")
    page.wait_for_function(
        "() => document.querySelectorAll('#search-results li').length > 0 && "
        "document.querySelectorAll('#search-results li p.context').length > 0",
        timeout=TIMEOUT_MS)
    page.wait_for_load_state("networkidle", timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)  # the last snippets
    results = page.locator("#search-results li")
    assert results.count() >= 3, "a search for 'temperature' should find several chapters"
    text = page.locator("#search-results").inner_text()
    tex = [m for m in ("\\(", "\\)", "\\alpha", "\\mathrm", "\\frac", "$$") if m in text]
    assert not tex, f"search results show raw TeX {tex}: {text[:300]}"
    assert not log.page_errors and not log.console_errors, vars(log)


def _check_scrubber(page, animation) -> None:
    """A matplotlib to_jshtml() scrubber steps to another frame when "next" is clicked."""
    image = animation.locator("img[id^='_anim_img']")
    next_button = animation.locator("button[onclick*='next_frame']")
    assert image.count() == 1 and next_button.count() == 1, "scrubber without its image or next button"
    animation.scroll_into_view_if_needed()
    assert image.is_visible(), "scrubber frame image not visible"
    # Every button shows an icon: the build draws matplotlib's `<i class="fa fa-play">` as an
    # inline <svg> (book/_ext/offline_site.py), since the site loads no icon font.
    icons = animation.evaluate(
        """a => [...a.querySelectorAll('button')].map(b => {
             const icon = b.querySelector('svg');
             if (!icon) return 'missing: ' + b.innerHTML.slice(0, 60);
             const box = icon.getBoundingClientRect();
             return box.width > 0 && box.height > 0 ? 'ok' : 'empty';
           })"""
    )
    assert icons and all(icon == "ok" for icon in icons), f"scrubber buttons without a visible icon: {icons}"
    before = image.get_attribute("src")
    next_button.click()
    page.wait_for_function("([img, src]) => img.src !== src", arg=[image.element_handle(), before], timeout=10_000)
    assert image.get_attribute("src") != before


def test_widget_chapter_shows_the_scrubber_instead_of_a_dead_widget(open_page):
    """Chapter 1's live temperature widget needs a kernel: the site shows no saved view of it
    (nothing that looks like a slider and does nothing), only the scrubber beside it, which
    responds."""
    if WIDGET_CHAPTER not in PAGES:
        pytest.skip(f"{WIDGET_CHAPTER} not built")
    page, log = open_page(WIDGET_CHAPTER)

    assert page.locator(".widget-slider, .jupyter-widgets, .lm-Widget").count() == 0, (
        "a saved ipywidgets view is on the page: no kernel drives it on the site")
    scrubbers = page.locator("div.animation")
    assert scrubbers.count() > 0, "no matplotlib to_jshtml() scrubber on the page"
    scrubber = scrubbers.first
    scrubber.scroll_into_view_if_needed()
    _check_scrubber(page, scrubber)
    assert not log.external and not log.failed and not log.page_errors and not log.console_errors, vars(log)
