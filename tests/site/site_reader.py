"""What a reader of the built site sees, measured in the browser (shared by the site test and
the report below).

* :data:`OVERFLOW_JS`: the code cells, text outputs, tables, display equations and figures of a
  page that are wider than the text column (a reader would have to scroll them sideways, or
  they are cut off).
* :data:`PAGE_WIDTH_JS`: how far the page itself scrolls sideways (the phone-width check).
* :data:`PROGRESS_JS`: progress-bar text left in the rendered outputs (tqdm's ``12%|█▎ | 3/25``
  or its saved widget).
* :data:`CONTROLS_JS`: controls that look interactive (sliders, buttons, saved widget views)
  and are not part of a working scrubber.
* :func:`page_weight`: the bytes a page loads (itself and every distinct local file it
  requests), from the files on disk, so the number does not depend on caching.

Run as a script to print a per-page report (used for the closing notes of the site issue)::

    .venv/bin/python tests/site/site_reader.py [--site _build/html] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Elements of the article that must fit the text column: code and text outputs, display math,
# tables, figures and scrubbers. A block overflows when its content is wider than its box (it
# scrolls) or when its box sticks out of the article (it is cut off or widens the page).
OVERFLOW_JS = r"""() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main');
  if (!article) return [];
  const right = article.getBoundingClientRect().right;
  const selector = 'div.cell_input pre, div.cell_output pre, div.output pre, ' +
                   'div.highlight pre, div.math, mjx-container[display="true"], table, ' +
                   'div.cell_output img, div.animation, div.cell_output > div';
  const hits = [];
  for (const el of article.querySelectorAll(selector)) {
    if (el.offsetParent === null) continue;                 // hidden (e.g. a folded cell)
    const box = el.getBoundingClientRect();
    const scrolls = el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0;
    const sticksOut = box.right > right + 1;
    if (!scrolls && !sticksOut) continue;
    const cell = el.closest('div.cell');
    const text = (el.innerText || el.getAttribute('alt') || el.tagName).trim();
    hits.push({
      kind: el.closest('div.cell_input') ? 'code' : el.closest('div.math, mjx-container')
            ? 'math' : el.tagName.toLowerCase() === 'table' ? 'table'
            : el.closest('div.cell_output') ? 'output' : el.tagName.toLowerCase(),
      cell: cell ? [...document.querySelectorAll('div.cell')].indexOf(cell) : -1,
      content: Math.round(Math.max(el.scrollWidth, box.width)),
      box: Math.round(Math.min(el.clientWidth || box.width, right - box.left)),
      text: text.split('\n').sort((a, b) => b.length - a.length)[0].slice(0, 100),
    });
  }
  // One report per block: a <pre> inside an output <div> is the same block.
  const seen = new Set();
  return hits.filter(h => { const key = h.cell + h.kind + h.text;
                           if (seen.has(key)) return false; seen.add(key); return true; });
}"""

PAGE_WIDTH_JS = """() => ({
  scroll: document.documentElement.scrollWidth,
  viewport: document.documentElement.clientWidth,
})"""

PROGRESS_JS = r"""() => {
  const hits = [];
  const outputs = document.querySelectorAll('div.cell_output, div.output');
  for (const out of outputs) {
    const text = out.innerText || '';
    const bar = text.match(/\d+%\|[^\n]*\|\s*\d+\/\d+|\d+\/\d+ \[\d+:\d+(<|\])/);
    if (bar) hits.push(bar[0].slice(0, 80));
    if (out.querySelector('.widget-progress, progress')) hits.push('progress widget');
  }
  return hits;
}"""

# A control is live when it belongs to a matplotlib to_jshtml() scrubber (plain JavaScript over
# embedded frames) or to the theme; a saved ipywidget view (it needs a kernel) never is.
CONTROLS_JS = r"""() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main');
  if (!article) return [];
  const dead = [];
  for (const el of article.querySelectorAll('input, button, select, .jupyter-widgets, ' +
                                              'script[type="application/vnd.jupyter.widget-view+json"]')) {
    if (el.closest('div.animation')) continue;              // a working scrubber (tested apart)
    if (el.closest('.highlight, .copybtn, .headerlink, .toggle-button')) continue;
    if (el.matches('button.copybtn, button.toggle-button')) continue;
    dead.push(el.tagName.toLowerCase() + (el.className ? '.' + String(el.className).split(' ')[0] : '')
              + (el.type ? '[' + el.type + ']' : ''));
  }
  return dead;
}"""


def local_path(html_dir: Path, url: str) -> Path | None:
    """The file under ``html_dir`` that a local http URL of the served site names."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    path = (html_dir / unquote(parts.path).lstrip("/")).resolve()
    return path if path.is_file() and html_dir in path.parents else None


def page_weight(html_dir: Path, urls) -> int:
    """Bytes of the distinct local files among ``urls`` (the page and all it requested)."""
    files = {p for p in (local_path(html_dir, u) for u in urls) if p is not None}
    return sum(p.stat().st_size for p in files)


def _report(html_dir: Path, chromium: str, pages: list[str]) -> list[dict]:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from playwright.sync_api import sync_playwright

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(html_dir)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        for relpath in pages:
            row = {"page": relpath}
            for width in (1280, 390):
                context = browser.new_context(viewport={"width": width, "height": 900})
                page = context.new_page()
                urls = []
                page.on("request", lambda r: urls.append(r.url))
                page.goto(base + relpath, wait_until="networkidle", timeout=120_000)
                page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                              " ? MathJax.startup.promise.then(() => 1) : 0")
                page.wait_for_timeout(300)
                width_info = page.evaluate(PAGE_WIDTH_JS)
                if width == 1280:
                    row["overflow"] = page.evaluate(OVERFLOW_JS)
                    row["weight"] = page_weight(html_dir, urls)
                    row["progress"] = page.evaluate(PROGRESS_JS)
                    row["dead_controls"] = page.evaluate(CONTROLS_JS)
                    row["page_scroll_1280"] = width_info["scroll"] - width_info["viewport"]
                else:
                    row["page_scroll_390"] = width_info["scroll"] - width_info["viewport"]
                context.close()
            rows.append(row)
        browser.close()
    server.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[2]
    parser.add_argument("--site", type=Path, default=root / "_build" / "html")
    parser.add_argument("--chromium", default=os.environ.get("KD_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("pages", nargs="*", help="pages relative to the site (default: all)")
    args = parser.parse_args()
    html_dir = args.site.resolve()
    pages = args.pages or sorted(
        p.relative_to(html_dir).as_posix() for p in html_dir.rglob("*.html")
        if not any(part.startswith("_") for part in p.relative_to(html_dir).parts))
    rows = _report(html_dir, args.chromium, pages)
    print(f"{'page':44} {'overflow':>8} {'MB':>6} {'bars':>4} {'dead':>4} {'390px':>6}")
    for row in rows:
        print(f"{row['page']:44} {len(row['overflow']):8d} {row['weight'] / 1e6:6.2f} "
              f"{len(row['progress']):4d} {len(row['dead_controls']):4d} {row['page_scroll_390']:6d}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
