"""Shared test setup: portable numerics and one torch thread, as in the chapters.

`use_portable_numerics` must run before the first tensor operation, so it runs here, when
pytest loads this file and before it imports any test module. Results are then the same on
every x86-64 CPU with AVX2 (see kd_lib/numerics.py), and bit-identical run to run at a fixed
thread count; small models also run fastest (and are not slowed 10-100x by a busy second
core) on one thread.
"""
import pytest

from kd_lib.lab.numerics import use_portable_numerics

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


def fresh_venv(folder):
    """A new venv in ``folder`` that sees the pinned third-party packages (torch etc.) but not kd_lib.

    A plain path entry in a .pth file adds the checkout venv's site-packages, but the editable-install
    hook inside it is not processed, so only a kd_lib installed into the new venv can be imported
    (checked here). Returns the new venv's python.
    """
    import subprocess
    import sys
    from pathlib import Path

    venv = Path(folder) / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    third_party = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").exists())
    (site / "pinned_third_party.pth").write_text(f"{third_party}\n")
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('kd_lib'))"],
                           capture_output=True, text=True, check=True, cwd=folder)
    assert probe.stdout.strip() == "None", "kd_lib must not be importable in a fresh venv"
    return python
