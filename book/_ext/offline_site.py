"""Keep the built site self-contained (no network needed to read it).

Sphinx extension loaded from ``_config.yml`` (``sphinx.local_extensions``). On every HTML page:

* drops links to known CDN assets that notebook outputs carry and the site does not need:
  matplotlib's ``to_jshtml()`` links Font Awesome 4 from a CDN for its buttons, whose icons
  the build draws as inline SVG (below);
* warns (which fails ``jupyter-book build -W``) when a page still loads a script,
  stylesheet, image, frame or media file from another host;
* removes duplicated inline scripts: Sphinx 7.4 emits an inline script that an extension adds
  after the builder starts (sphinx-thebe, sphinx-togglebutton) twice, and the second
  ``const THEBE_JS_URL`` is a JavaScript SyntaxError on every page;
* on pages with both MathJax 3 and saved ipywidgets state, maps the MathJax 2 call that
  ipywidgets 8 uses to typeset widget labels (``MathJax.Hub.Queue``) onto MathJax 3, which
  would otherwise throw "Cannot read properties of undefined (reading 'Queue')";
* adds the book's stylesheet and search clean-up (``book/_theme/kd_book.css``, ``kd_book.js``);
* after the build, draws every icon into the pages as inline SVG (the theme's
  ``<i class="fa-solid fa-bars">`` and the ``<i class="fa fa-play">`` buttons of matplotlib
  scrubbers), with the paths of the theme's own Font Awesome 6 script: pages then load neither
  that 1.5 MB script nor any icon font; a 1 kB ``_static/kd_icons.js`` draws the icons that
  scripts add later. Pages other than search.html no longer load the search index, which
  the theme loads everywhere for a search-as-you-type option this book leaves off.

``tests/site/test_site.py`` checks the same thing at run time in headless Chromium.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

try:  # Sphinx >= 7.2
    from sphinx.builders.html._assets import _JavaScript
except ImportError:  # pragma: no cover
    _JavaScript = None

logger = logging.getLogger(__name__)

# Tags (regex) that notebook outputs carry and the site drops: matplotlib to_jshtml()'s
# Font Awesome 4 stylesheet (its button icons become inline SVG in _lighten_pages).
CDN_DROPPED = [
    r'<link\b[^>]*href="https?://maxcdn\.bootstrapcdn\.com/font-awesome/4\.[0-9.]+/css/font-awesome(?:\.min)?\.css"[^>]*>',
]

# Tags whose attribute makes the browser fetch something when the page loads.
_EXTERNAL_LOAD = re.compile(
    r"<(?:script|img|iframe|audio|video|source|embed)\b[^>]*?\bsrc\s*=\s*[\"'](?:https?:)?//[^\"']+"
    r"|<link\b[^>]*?\brel\s*=\s*[\"'](?:stylesheet|preload|modulepreload)[\"'][^>]*?\bhref\s*=\s*[\"'](?:https?:)?//[^\"']+"
    r"|<link\b[^>]*?\bhref\s*=\s*[\"'](?:https?:)?//[^\"']+[\"'][^>]*?\brel\s*=\s*[\"'](?:stylesheet|preload|modulepreload)[\"']"
    r"|@import\s+(?:url\()?[\"']?(?:https?:)?//[^\"')]+",
    re.IGNORECASE,
)


# ipywidgets' `typeset()` calls MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]) (MathJax 2).
MATHJAX2_HUB_SHIM = """\
window.MathJax = window.MathJax || {};
window.MathJax.startup = Object.assign({}, window.MathJax.startup, {
  ready: function () {
    MathJax.startup.defaultReady();
    MathJax.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (command) {
          if (Array.isArray(command) && command[0] === "Typeset" && command[2]) {
            MathJax.startup.promise = MathJax.startup.promise
              .then(function () { return MathJax.typesetPromise([command[2]]); })
              .catch(function (err) { console.warn("MathJax typeset of a widget failed:", err); });
          }
        });
      }
    };
  }
});"""


def _asset_key(asset) -> tuple:
    filename = getattr(asset, "filename", asset) or ""
    attributes = getattr(asset, "attributes", {}) or {}
    return (filename, tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe(assets) -> list:
    seen, unique = set(), []
    for asset in assets:
        key = _asset_key(asset)
        if key not in seen:
            seen.add(key)
            unique.append(asset)
    return unique


def _fix_scripts(app: Sphinx, context: dict) -> None:
    scripts = _dedupe(context.get("script_files", []))
    context["script_files"] = scripts
    if "css_files" in context:
        context["css_files"] = _dedupe(context["css_files"])

    names = [getattr(js, "filename", js) or "" for js in scripts]
    mathjax = app.config.mathjax_path
    widget_js = [name if "://" in name else f"_static/{name}" for name in app.config.nb_ipywidgets_js]
    has_mathjax = any(name.endswith(mathjax) for name in names if mathjax)
    has_widgets = any(name in widget_js for name in names)
    if not (has_mathjax and has_widgets) or _JavaScript is None:
        return
    # Right after `window.MathJax = {...}` (Sphinx's mathjax3_config), or before MathJax itself.
    position = next(
        (i + 1 for i, js in enumerate(scripts)
         if str(getattr(js, "attributes", {}).get("body", "")).startswith("window.MathJax")),
        next(i for i, name in enumerate(names) if mathjax and name.endswith(mathjax)),
    )
    priority = getattr(scripts[position - 1] if position else scripts[0], "priority", 500)
    scripts.insert(position, _JavaScript("", priority=priority, body=MATHJAX2_HUB_SHIM))


def _is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "//"))


def _localise(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    _fix_scripts(app, context)
    body = context.get("body")
    if not body:
        return
    pathto = context["pathto"]
    for pattern in CDN_DROPPED:
        body = re.sub(pattern, "", body)
    context["body"] = body

    for match in _EXTERNAL_LOAD.finditer(body):
        logger.warning(
            "page %s loads a remote asset, which fails on an offline site: %s "
            "(vendor it in book/_vendor/ and map it in book/_ext/offline_site.py)",
            pagename, match.group(0)[:200], type="offline_site", subtype="remote_asset",
        )
    for key in ("script_files", "css_files"):
        for asset in context.get(key, []):
            uri = getattr(asset, "filename", asset)
            if isinstance(uri, str) and _is_remote(uri):
                logger.warning(
                    "page %s loads a remote %s: %s", pagename, key[:-6], uri,
                    type="offline_site", subtype="remote_asset",
                )


# --- icons and page weight -------------------------------------------------------------------

THEME_ICON_SCRIPT = "_static/scripts/fontawesome.js"
ICON_SCRIPT = "_static/kd_icons.js"
# Font Awesome 6 packs by class prefix (the theme's icons) ...
_PREFIX = {"fa-solid": "fas", "fas": "fas", "fa-brands": "fab", "fab": "fab", "fa-regular": "far", "far": "far"}
# ... and the Font Awesome 4 names of matplotlib's to_jshtml() buttons (`fa fa-play`), drawn
# with the Font Awesome 6 solid icon of the same picture.
_FA4_TO_FA6 = {"minus": "minus", "plus": "plus", "play": "play", "pause": "pause",
               "fast-backward": "backward-fast", "fast-forward": "forward-fast",
               "step-backward": "backward-step", "step-forward": "forward-step"}
_MODIFIERS = {"fa-lg": "kd-icon-lg", "fa-flip-horizontal": "kd-icon-flip", "fa-fw": "kd-icon-fw"}
# Icons the theme's JavaScript creates after the page has loaded (pydata-sphinx-theme.js).
_SCRIPT_ICONS = [("fas", "xmark")]
_ICON_ELEMENT = re.compile(r'<(i|span)\b([^>]*?)\bclass="([^"]*\bfa[a-z-]*\b[^"]*)"([^>]*)>\s*</\1>')
_THEME_SCRIPT_TAG = re.compile(r'<script\b[^>]*src="([^"]*?)_static/scripts/fontawesome\.js[^"]*"[^>]*>\s*</script>')
# The search index and tools that pydata-sphinx-theme loads on every page for its
# search-as-you-type option, which this book leaves off (search.html loads its own).
_SEARCH_SCRIPT_TAG = re.compile(r'\s*<script src="[^"]*(?:_static/searchtools\.js|_static/language_data\.js|searchindex\.js)[^"]*"></script>')

# Draws icons that scripts add later (the build already drew the page's own as inline SVG).
ICON_RUNTIME = """
(function () {
  "use strict";
  function draw(root) {
    var icons = root.querySelectorAll("i.fa-solid, span.fa-solid, i.fas, span.fas");
    for (var i = 0; i < icons.length; i++) {
      var el = icons[i], name = null;
      el.classList.forEach(function (c) { if (ICONS["fas " + c.slice(3)]) name = c.slice(3); });
      if (!name) continue;
      var icon = ICONS["fas " + name];
      var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("viewBox", "0 0 " + icon[0] + " " + icon[1]);
      svg.setAttribute("aria-hidden", "true");
      svg.setAttribute("class", "kd-icon");
      svg.style.width = (icon[0] / icon[1]).toFixed(4) + "em";
      var path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("fill", "currentColor");
      path.setAttribute("d", icon[2]);
      svg.appendChild(path);
      el.parentNode.replaceChild(svg, el);
    }
  }
  new MutationObserver(function (records) {
    records.forEach(function (r) {
      r.addedNodes.forEach(function (n) { if (n.nodeType === 1) draw(n.parentNode || n); });
    });
  }).observe(document.documentElement, {childList: true, subtree: true});
})();
"""


def _theme_icon_paths(script: str) -> dict:
    """{(pack, name): (width, height, path)} for every icon in the theme's Font Awesome script."""
    ends = {m.group(1): m.start() for m in re.finditer(r'\("(fa[a-z])",\s*\w+\)', script)}
    bounds, start = {}, 0
    for pack in sorted(ends, key=ends.get):
        bounds[pack] = (start, ends[pack])
        start = ends[pack]
    pattern = re.compile(r'(?:"([a-z0-9-]+)"|(?<![\w-])([a-z0-9-]+)):\[(\d+),(\d+),\[[^\]]*\],"[0-9a-f]*","((?:[^"\\]|\\.)*)"\]')
    icons = {}
    for pack, (a, b) in bounds.items():
        for m in pattern.finditer(script, a, b):
            icons[(pack, m.group(1) or m.group(2))] = (int(m.group(3)), int(m.group(4)), m.group(5))
    return icons


def _icon_key(classes: list) -> tuple | None:
    """(pack, name) of an icon element's classes, or None if it is not a Font Awesome icon."""
    pack = next((_PREFIX[c] for c in classes if c in _PREFIX), None)
    names = [c[3:] for c in classes if c.startswith("fa-") and c not in _PREFIX and c not in _MODIFIERS]
    if pack and names:
        return pack, names[-1]
    if "fa" in classes and names and names[-1] in _FA4_TO_FA6:  # matplotlib's Font Awesome 4 buttons
        return "fas", _FA4_TO_FA6[names[-1]]
    return None


def _inline_icons(html: str, icons: dict, missing: set) -> str:
    def svg(match):
        tag, before, class_text, after = match.groups()
        classes = class_text.split()
        key = _icon_key(classes)
        if key is None:
            return match.group(0)
        if key not in icons:
            missing.add(" ".join(key))
            return match.group(0)
        width, height, path = icons[key]
        kept = [c for c in classes if c != "fa" and not c.startswith("fa-") and c not in _PREFIX]
        kept += [_MODIFIERS[c] for c in classes if c in _MODIFIERS]
        return (f'<svg{before}class="{" ".join(["kd-icon", *kept])}"{after} viewBox="0 0 {width} {height}" '
                f'style="width:{width / height:.4f}em" aria-hidden="true" focusable="false">'
                f'<path fill="currentColor" d="{path}"/></svg>')

    return _ICON_ELEMENT.sub(svg, html)


def _lighten_pages(app: Sphinx, exception) -> None:
    """After the build, on every page: icons as inline SVG (no 1.5 MB Font Awesome script and
    no icon fonts), no search index except on the search page."""
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    theme_script = out / THEME_ICON_SCRIPT
    if not theme_script.exists():  # already done by an earlier (incremental) build
        return
    icons = _theme_icon_paths(theme_script.read_text(encoding="utf-8"))
    missing: set = set()
    for path in out.rglob("*.html"):
        if "_static" in path.relative_to(out).parts:
            continue
        text = path.read_text(encoding="utf-8")
        new = _inline_icons(text, icons, missing)
        new = _THEME_SCRIPT_TAG.sub(lambda m: f'<script defer src="{m.group(1)}{ICON_SCRIPT}"></script>', new)
        if path.relative_to(out).as_posix() != "search.html":
            new = _SEARCH_SCRIPT_TAG.sub("", new)
        if new != text:
            path.write_text(new, encoding="utf-8")
    if missing:
        logger.warning("icons not found in the theme's Font Awesome script: %s", ", ".join(sorted(missing)),
                       type="offline_site", subtype="icons")
    dynamic = {f"{pack} {name}": icons[(pack, name)] for pack, name in _SCRIPT_ICONS}
    header = ("/* Icons that the theme's scripts add after loading, as inline SVG. The paths are Font\n"
              " * Awesome Free 6's (https://fontawesome.com, icons CC BY 4.0, code MIT), taken from\n"
              " * the theme's fontawesome.js by book/_ext/offline_site.py, which draws every other\n"
              " * icon of the site into the HTML when it is built. */\n")
    (out / ICON_SCRIPT).write_text(header + "var ICONS = " + json.dumps(dynamic) + ";\n" + ICON_RUNTIME,
                                   encoding="utf-8")
    for leftover in theme_script.parent.glob("fontawesome.js*"):
        if not leftover.name.endswith("LICENSE.txt"):
            leftover.unlink()


def setup(app: Sphinx) -> dict:
    # Run after myst-nb and the theme have added their page assets.
    app.connect("html-page-context", _localise, priority=900)
    app.connect("build-finished", _lighten_pages)
    app.add_css_file("kd_book.css", priority=900)
    app.add_js_file("kd_book.js", loading_method="defer", priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
