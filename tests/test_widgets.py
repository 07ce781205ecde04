"""kd_lib.lab.widgets.explore: a live slider explorer over the same draw(ax, ...) a scrubber uses."""
import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import pytest  # noqa: E402

from kd_lib.lab.widgets import explore  # noqa: E402


class Recorder:
    """A draw function that records the parameters it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, ax, temperature, alpha=0.5):
        self.calls.append({"temperature": temperature, "alpha": alpha})
        ax.plot([0, 1], [temperature, alpha])
        ax.set_title(f"T = {temperature}")


def sliders_of(widget):
    return {child.description: child for child in widget.children if isinstance(child, ipywidgets.SelectionSlider)}


def test_explore_returns_an_interactive_with_one_slider_per_parameter():
    widget = explore(Recorder(), {"temperature": [1.0, 2.0], "alpha": [0.0, 1.0]})
    assert isinstance(widget, ipywidgets.interactive)
    assert set(sliders_of(widget)) == {"temperature", "alpha"}


def test_explore_slider_steps_through_exactly_the_given_values_in_order():
    widget = explore(Recorder(), {"temperature": [0.5, 1.0, 4.0, 16.0]})
    slider = sliders_of(widget)["temperature"]
    assert list(slider.options) == [("0.5", 0.5), ("1", 1.0), ("4", 4.0), ("16", 16.0)]


def test_explore_draws_once_at_the_start_values():
    draw = Recorder()
    explore(draw, {"temperature": [1.0, 4.0], "alpha": [0.0, 0.3]}, start={"temperature": 4.0})
    assert draw.calls == [{"temperature": 4.0, "alpha": 0.0}]


def test_moving_a_slider_redraws_with_the_new_value():
    draw = Recorder()
    widget = explore(draw, {"temperature": [1.0, 4.0, 8.0]})
    sliders_of(widget)["temperature"].value = 8.0
    assert draw.calls[-1] == {"temperature": 8.0, "alpha": 0.5}


def test_explore_closes_its_figures():
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    widget = explore(Recorder(), {"temperature": [1.0, 2.0, 3.0]})
    sliders_of(widget)["temperature"].value = 3.0
    assert len(plt.get_fignums()) == before


def test_explore_rejects_no_parameters():
    with pytest.raises(ValueError, match="at least one parameter"):
        explore(Recorder(), {})


def test_explore_rejects_a_slider_without_values():
    with pytest.raises(ValueError, match="'temperature' has no values"):
        explore(Recorder(), {"temperature": []})


def test_explore_rejects_a_parameter_that_draw_does_not_take():
    with pytest.raises(ValueError, match=r"no parameter named \['beta'\]"):
        explore(Recorder(), {"temperature": [1.0], "beta": [0.1]})


def test_explore_accepts_any_name_when_draw_takes_keyword_arguments():
    calls = []
    widget = explore(lambda ax, **kw: calls.append(kw), {"beta": [0.1, 0.9]})
    assert calls == [{"beta": 0.1}] and "beta" in sliders_of(widget)


def test_explore_rejects_a_start_value_that_is_not_on_the_slider():
    with pytest.raises(ValueError, match="start value 3.0"):
        explore(Recorder(), {"temperature": [1.0, 2.0]}, start={"temperature": 3.0})


def test_explore_rejects_a_start_for_a_parameter_without_slider():
    with pytest.raises(ValueError, match=r"start names \['alpha'\]"):
        explore(Recorder(), {"temperature": [1.0, 2.0]}, start={"alpha": 0.5})
