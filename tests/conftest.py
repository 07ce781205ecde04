"""Shared test setup: portable numerics and one torch thread, as in the chapters.

`use_portable_numerics` must run before the first tensor operation, so it runs here, when
pytest loads this file and before it imports any test module. Results are then the same on
every x86-64 CPU with AVX2 (see kd_lib/numerics.py), and bit-identical run to run at a fixed
thread count; small models also run fastest (and are not slowed 10-100x by a busy second
core) on one thread.
"""
import pytest

from kd_lib.numerics import use_portable_numerics

NUMERICS = use_portable_numerics()

import torch  # noqa: E402  (after the numerics are pinned)

torch.set_num_threads(1)


def pytest_report_header(config):
    return f"kd_lib numerics: {NUMERICS}"


@pytest.fixture
def portable_numerics():
    """Skip a test that compares with stored numbers where the numerics cannot be pinned."""
    if not NUMERICS.portable:
        pytest.skip(f"compares with numbers stored on an AVX2-pinned x86-64 CPU; here: {NUMERICS}")


def load_script(name):
    """Import scripts/<name>.py as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
