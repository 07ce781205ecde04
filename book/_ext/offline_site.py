"""Keep the built site self-contained (no network needed to read it).

Sphinx extension loaded from ``_config.yml`` (``sphinx.local_extensions``). On every HTML page:

* rewrites links to known CDN assets that notebook outputs carry (matplotlib's
  ``to_jshtml()`` links font-awesome 4 from a CDN for its buttons) to the copies vendored in
  ``book/_vendor/`` (served from ``_static/``);
* warns (which fails ``jupyter-book build -W``) when a page still loads a script,
  stylesheet, image, frame or media file from another host;
* removes duplicated inline scripts: Sphinx 7.4 emits an inline script that an extension adds
  after the builder starts (sphinx-thebe, sphinx-togglebutton) twice, and the second
  ``const THEBE_JS_URL`` is a JavaScript SyntaxError on every page;
* on pages with both MathJax 3 and saved ipywidgets state, maps the MathJax 2 call that
  ipywidgets 8 uses to typeset widget labels (``MathJax.Hub.Queue``) onto MathJax 3, which
  would otherwise throw "Cannot read properties of undefined (reading 'Queue')".

``tests/site/test_site.py`` checks the same thing at run time in headless Chromium.
"""

from __future__ import annotations

import re

from sphinx.application import Sphinx
from sphinx.util import logging

try:  # Sphinx >= 7.2
    from sphinx.builders.html._assets import _JavaScript
except ImportError:  # pragma: no cover
    _JavaScript = None

logger = logging.getLogger(__name__)

# CDN asset URL (regex) -> vendored path under _static/
CDN_TO_VENDORED = {
    r"https?://maxcdn\.bootstrapcdn\.com/font-awesome/4\.[0-9.]+/css/font-awesome(?:\.min)?\.css":
        "_static/font-awesome/css/font-awesome.min.css",
}

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
    for pattern, local in CDN_TO_VENDORED.items():
        body = re.sub(pattern, pathto(local, 1), body)
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


def setup(app: Sphinx) -> dict:
    # Run after myst-nb and the theme have added their page assets.
    app.connect("html-page-context", _localise, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
