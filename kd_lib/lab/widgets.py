"""Live ``ipywidgets`` explorers that share their drawing code with the site's static scrubbers.

A chapter writes one function ``draw(ax, **parameters)`` that draws a figure on an ``Axes``.
In a running kernel, :func:`explore` puts one slider per parameter in front of it and redraws
on every move; on the built site (no kernel), :func:`kd_lib.lab.plots.scrubber` plays the same
function over precomputed frames. Each slider steps through exactly the values it is given,
so the live explorer and the static scrubber show the same settings.

    draw = lambda ax, temperature: ax.bar(range(10), kd_lib.soften(logits, temperature))
    explore(draw, {"temperature": [1, 2, 4, 8]}, start={"temperature": 4})   # live kernel
    scrubber(draw, [1, 2, 4, 8])                                               # built site
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional, Sequence

__all__ = ["explore"]


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_parameters(draw: Callable[..., None], names: Sequence[str]) -> None:
    try:
        signature = inspect.signature(draw)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [name for name in names if name not in parameters]
    if unknown:
        raise ValueError(
            f"draw() has no parameter named {unknown}; its parameters are {list(parameters)}"
        )


def explore(
    draw: Callable[..., None],
    values: Mapping[str, Sequence[Any]],
    *,
    start: Optional[Mapping[str, Any]] = None,
    figsize=(6.4, 3.6),
):
    """One slider per parameter of ``draw``; every move redraws ``draw(ax, **chosen)``.

    ``values`` maps a parameter name to the values its slider steps through (in order);
    ``start`` optionally picks each slider's first position (default: the first value).
    Returns an ``ipywidgets.interactive`` (display it, e.g. as the last line of a cell).
    Sliders update when released, so a slow ``draw`` does not queue up redraws.
    """
    if not values:
        raise ValueError("explore needs at least one parameter to put on a slider")
    start = dict(start or {})
    extra = [name for name in start if name not in values]
    if extra:
        raise ValueError(f"start names {extra}, which have no slider; sliders: {list(values)}")
    _check_parameters(draw, list(values))

    import ipywidgets
    import matplotlib.pyplot as plt

    sliders = {}
    for name, options in values.items():
        options = list(options)
        if not options:
            raise ValueError(f"the slider for {name!r} has no values")
        first = start.get(name, options[0])
        if not any(first is option or first == option for option in options):
            raise ValueError(f"start value {first!r} for {name!r} is not one of its values {options}")
        sliders[name] = ipywidgets.SelectionSlider(
            options=[(_label(option), option) for option in options],
            value=first,
            description=name,
            continuous_update=False,
            style={"description_width": "initial"},
        )

    def redraw(**chosen: Any) -> None:
        figure, ax = plt.subplots(figsize=figsize)
        try:
            draw(ax, **chosen)
            figure.tight_layout()
            plt.show()
        finally:
            plt.close(figure)

    return ipywidgets.interactive(redraw, **sliders)
