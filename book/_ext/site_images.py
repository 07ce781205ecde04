"""Smaller figures on the built site: PNGs stored with a 256-colour palette where that is exact
enough.

Sphinx extension loaded from ``_config.yml`` (``sphinx.local_extensions``). After the build it
rewrites, in ``_build/html`` only, every figure in ``_images/`` and every frame that a
matplotlib ``to_jshtml()`` scrubber embeds in its page (``frames[i] = "data:image/png;base64,
..."``). The notebooks keep matplotlib's own RGBA files.

matplotlib writes 32-bit RGBA PNGs, but a plot has few distinct colours (lines, text and their
anti-aliased edges): on the book's figures an indexed PNG (median-cut palette of 256 colours,
no dithering) is about a third of the size. An image is replaced only when the palette version
is smaller, the image is fully opaque, and its mean absolute error is at most ``MAX_MEAN_ERROR``
levels of 255 per channel (measured on the chapters' figures, 2026-12-03: 0.00-0.28, with the
largest single-pixel errors on anti-aliased edges); otherwise the original stays.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

MAX_MEAN_ERROR = 1.0  # per channel, in levels of 255
# matplotlib's HTMLWriter writes each frame as base64 with backslash-newline continuations.
FRAME = re.compile(r'(data:image/png;base64,)((?:[A-Za-z0-9+/=]|\\\n)+)"')


def palette_png(data: bytes) -> bytes | None:
    """``data`` re-encoded as an indexed PNG, or None when that would be larger or inexact."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    rgba = np.asarray(image.convert("RGBA"))
    if (rgba[..., 3] != 255).any():  # transparency: keep the original
        return None
    rgb = image.convert("RGB")
    indexed = rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    error = np.abs(np.asarray(indexed.convert("RGB"), dtype=np.int16) - rgba[..., :3].astype(np.int16))
    if error.mean() > MAX_MEAN_ERROR:
        return None
    out = io.BytesIO()
    indexed.save(out, "PNG", optimize=True)
    return out.getvalue() if out.tell() < len(data) else None


def _smaller(data: bytes, where) -> bytes | None:
    try:
        return palette_png(data)
    except Exception as error:  # an image the build wrote and Pillow cannot read
        raise RuntimeError(f"site_images: cannot read an image in {where}: {error}") from error


def _frames(html: str, where="a page") -> tuple[str, int, int]:
    before = after = 0

    def replace(match: re.Match) -> str:
        nonlocal before, after
        data = base64.b64decode(match.group(2).replace("\\\n", ""))
        smaller = _smaller(data, where)
        before += len(data)
        after += len(smaller or data)
        if smaller is None:
            return match.group(0)
        return match.group(1) + base64.b64encode(smaller).decode("ascii") + '"'

    return FRAME.sub(replace, html), before, after


def _compress(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    before = after = 0
    for path in sorted((out / "_images").glob("*.png")):
        data = path.read_bytes()
        smaller = _smaller(data, path)
        before += len(data)
        after += len(smaller or data)
        if smaller is not None:
            path.write_bytes(smaller)
    for page in sorted(out.rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        if "data:image/png;base64," not in html:
            continue
        new, was, now = _frames(html, page)
        before, after = before + was, after + now
        if new != html:
            page.write_text(new, encoding="utf-8")
    logger.info(f"site_images: figures and scrubber frames {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")


def setup(app: Sphinx) -> dict:
    app.connect("build-finished", _compress)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
