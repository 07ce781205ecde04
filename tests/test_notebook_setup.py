"""The chapters' setup helpers: seed offsets, glue for numbers quoted in prose, setup_notebook."""
import builtins
import sys

import pytest

from kd_lib.lab import notebook


def test_seed_offset_shifts_seeds_by_a_stride_that_never_reaches_fixed_seeds(monkeypatch):
    monkeypatch.delenv("KD_BOOK_SEED_OFFSET", raising=False)
    assert notebook.seeds(3) == [0, 1, 2] and notebook.shifted_seed(7) == 7
    monkeypatch.setenv("KD_BOOK_SEED_OFFSET", "2")
    assert notebook.seeds(3) == [2000, 2001, 2002] and notebook.shifted_seed(1) == 2001
    assert notebook.seeds(2, start=10) == [2010, 2011]


@pytest.mark.parametrize("value", ["-1", "one", "1.5"])
def test_a_bad_seed_offset_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("KD_BOOK_SEED_OFFSET", value)
    with pytest.raises(ValueError, match="KD_BOOK_SEED_OFFSET must be a non-negative integer"):
        notebook.seed_offset()


def test_seeds_needs_a_positive_count():
    with pytest.raises(ValueError, match="count must be >= 1"):
        notebook.seeds(0)


def test_setup_notebook_shifts_its_seed_and_says_so(monkeypatch, capsys):
    import torch

    monkeypatch.setenv("KD_BOOK_SEED_OFFSET", "3")
    notebook.setup_notebook(seed=5)
    first = torch.rand(1)
    torch.manual_seed(3005)
    assert torch.equal(first, torch.rand(1))
    out = capsys.readouterr().out
    assert "seed: 3005 (offset 3)" in out and "numerics:" in out


def test_glue_records_the_value_for_myst_nb(monkeypatch):
    recorded = []
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display: recorded.append((name, value, display)))
    assert notebook.glue("gain", "16.0") is None
    assert recorded == [("gain", "16.0", False)]


def test_glue_prints_the_value_where_myst_nb_is_missing(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_myst_nb(name, *args, **kwargs):
        if name == "myst_nb":
            raise ImportError("no myst_nb here (Colab)")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "myst_nb", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_myst_nb)
    assert notebook.glue("gain", "16.0") is None
    assert capsys.readouterr().out.strip() == "gain = 16.0"
