"""kd_lib installed as a reader installs it, in a fresh venv outside the checkout.

1. A wheel built from this checkout: it must carry the shipped teachers (package data), so
   that `load_pretrained` finds every one of them with no clone around.
2. The README's install line, `pip install "git+<repository>"`, with this checkout's committed
   HEAD as the repository (a file:// URL, as CI's clean clone has it).

The fresh venv reuses the pinned third-party packages (torch etc.) through a plain .pth entry,
which does not process the editable-install hook of the checkout's own kd_lib: only the
installed copy can be imported. Dependencies are not resolved again (`--no-deps`).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fresh_venv

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in (ROOT / "kd_lib" / "weights").glob("*.json"))
PROBE = """
import json, kd_lib
from kd_lib.pretrained import WEIGHTS_DIR, load_collection, load_manifest, load_pretrained
names = sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))
loaded = {}
for name in names:
    manifest = load_manifest(name)
    models = load_collection(name) if "models" in manifest else {"": load_pretrained(name)}
    loaded[name] = sum(sum(p.numel() for p in m.parameters()) for m in models.values())
print(json.dumps({"file": kd_lib.__file__, "loaded": loaded}))
"""

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh_python(tmp_path):
    python = fresh_venv(tmp_path)
    return python, python.parent.parent


def probe(python, cwd):
    result = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def pip(python, *args):
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                             "--no-deps", "--no-build-isolation", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def test_a_built_wheel_loads_every_shipped_teacher(fresh_python, tmp_path):
    python, venv = fresh_python
    wheels, source = tmp_path / "wheels", tmp_path / "source"  # built from a copy: no build/ left here
    shutil.copytree(ROOT / "kd_lib", source / "kd_lib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(source)], check=True, capture_output=True)
    (wheel,) = wheels.glob("kd_lib-*.whl")
    pip(python, str(wheel))
    found = probe(python, tmp_path)
    assert Path(found["file"]).is_relative_to(venv), found["file"]
    assert sorted(found["loaded"]) == SHIPPED and len(SHIPPED) >= 4
    assert all(count > 0 for count in found["loaded"].values())


def test_the_readme_install_line_loads_every_shipped_teacher(fresh_python, tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to install from")
    readme = (ROOT / "README.md").read_text()
    assert 'pip install "git+https://github.com/kd-book/distillation-book"' in readme
    python, venv = fresh_python
    pip(python, f"git+{ROOT.as_uri()}")
    found = probe(python, tmp_path)
    assert Path(found["file"]).is_relative_to(venv), found["file"]
    committed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "kd_lib/weights/*.json"],
                               capture_output=True, text=True, check=True).stdout.split()
    assert sorted(found["loaded"]) == sorted(Path(p).stem for p in committed) and committed
