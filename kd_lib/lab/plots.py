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

from typing import Any, Callable, Sequence

__all__ = ["scrubber"]


def scrubber(
    draw: Callable[[Any, Any], None],
    values: Sequence[Any],
    *,
    figsize=(6.4, 3.6),
    interval_ms: int = 500,
    dpi: int = 72,
):
    """A static, browser-side slider over precomputed frames.

    ``draw(ax, value)`` draws one frame on a cleared ``Axes`` (give it a title that names the
    value, so the reader knows where the slider is). Returns an ``IPython.display.HTML``.
    Keep ``values`` short (each frame is an embedded PNG).
    """
    if len(values) < 2:
        raise ValueError(f"a scrubber needs at least 2 values, got {len(values)}")
    import matplotlib.pyplot as plt
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation

    figure, ax = plt.subplots(figsize=figsize, dpi=dpi)

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
    return HTML(html)
