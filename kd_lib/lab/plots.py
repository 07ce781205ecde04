"""Figures shared by the chapters, and static "scrubbers" that stand in for widgets on the site.

An ``ipywidgets`` slider needs a running kernel; the built site has none. :func:`scrubber`
precomputes one frame per parameter value and returns matplotlib's ``to_jshtml()`` player:
plain HTML + JavaScript with the frames embedded, so its slider and buttons still respond in
the browser with no kernel. Its buttons use Font Awesome icons, which matplotlib links from a
CDN; in Jupyter or Colab that link just works, and the book's Sphinx extension
(``book/_ext/offline_site.py``) points it at the copy vendored with the site, so the built site
needs no network.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Optional, Sequence

__all__ = ["scrubber"]


def scrubber(
    draw: Callable[[Any, Any], None],
    values: Sequence[Any],
    *,
    start: Any = None,
    figsize=(6.4, 3.6),
    interval_ms: int = 500,
    dpi: Optional[int] = None,
):
    """A static, browser-side slider over precomputed frames.

    ``draw(ax, value)`` draws one frame on a cleared ``Axes`` (give it a title that names the
    value, so the reader knows where the slider is). ``start`` is the value it opens on (default:
    the first); make it the setting the text around it discusses. ``dpi`` defaults to the
    figure style of :func:`kd_lib.lab.notebook.setup_notebook`. Returns an
    ``IPython.display.HTML``. Keep ``values`` short (each frame is an embedded PNG).
    """
    if len(values) < 2:
        raise ValueError(f"a scrubber needs at least 2 values, got {len(values)}")
    values = list(values)
    first = 0
    if start is not None:
        matches = [i for i, value in enumerate(values) if value is start or value == start]
        if not matches:
            raise ValueError(f"start value {start!r} is not one of the scrubber's values {values}")
        first = matches[0]
    import matplotlib.pyplot as plt
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation

    figure, ax = plt.subplots(figsize=figsize, dpi=dpi or plt.rcParams["figure.dpi"])

    def frame(index: int):
        ax.clear()
        draw(ax, values[index])
        figure.tight_layout()
        return []

    animation = FuncAnimation(figure, frame, frames=len(values), interval=interval_ms, blit=False)
    try:
        html = animation.to_jshtml(fps=max(1, round(1000 / interval_ms)), default_mode="once")
    finally:
        plt.close(figure)
    if first:
        # matplotlib's player always shows frame 0 first; step it to `start` once it exists.
        html, count = re.subn(r"(anim([0-9a-f]+) = new Animation\([^;]*\);)",
                              lambda m: f"{m.group(1)}\n        anim{m.group(2)}.set_frame({first});", html)
        if count != 1:  # pragma: no cover - a matplotlib whose template changed
            raise RuntimeError("could not find the Animation constructor in matplotlib's to_jshtml output")
    return HTML(html)
