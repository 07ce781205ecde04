"""book/_ext/site_images.py: the site's figures as palette PNGs, only where that is exact enough."""
import base64
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "book" / "_ext"))
import site_images  # noqa: E402


def _png(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)
    return out.getvalue()


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_a_plot_shrinks_and_stays_within_the_error_bound():
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = np.linspace(0, 10, 200)
    for k in range(5):
        ax.plot(x, np.sin(x + k), label=f"curve {k}")
    ax.set(title="five curves", xlabel="x (units)", ylabel="y (units)")
    ax.legend()
    original = _png(fig)
    smaller = site_images.palette_png(original)
    assert smaller is not None and len(smaller) < 0.6 * len(original)
    assert Image.open(io.BytesIO(smaller)).mode == "P"
    error = np.abs(_rgb(smaller) - _rgb(original))
    assert error.mean() <= site_images.MAX_MEAN_ERROR


def test_noise_with_many_colours_is_left_alone():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    out = io.BytesIO()
    image.save(out, "PNG")
    assert site_images.palette_png(out.getvalue()) is None  # 256 colours cannot be that close


def test_transparency_is_left_alone():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    out = io.BytesIO()
    fig.savefig(out, format="png", transparent=True)
    plt.close(fig)
    assert site_images.palette_png(out.getvalue()) is None


def test_scrubber_frames_are_rewritten_in_place():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [2, 0, 1])
    data = _png(fig)
    encoded = base64.encodebytes(data).decode("ascii").replace("\n", "\\\n")
    html = f'<script>\n  frames[0] = "data:image/png;base64,{encoded}";\n</script>'
    new, before, after = site_images._frames(html)
    assert before == len(data) and after < before
    payload = new.split("base64,")[1].split('"')[0]
    assert np.abs(_rgb(base64.b64decode(payload)) - _rgb(data)).mean() <= site_images.MAX_MEAN_ERROR


@pytest.mark.parametrize("bad", [b"", b"not a png"])
def test_a_broken_image_stops_the_build_and_names_where_it_is(bad):
    with pytest.raises(RuntimeError, match="cannot read an image in book/x.html"):
        site_images._smaller(bad, "book/x.html")
