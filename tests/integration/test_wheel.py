"""The wheel a user installs holds every file attnscope needs, and installed in a fresh virtual
environment it gives a working `attnscope demo`.

The wheel is built from a copy of the source tree without build isolation (setuptools is in the
test environment; nothing is downloaded), and installed with ``--no-deps`` into a new venv that
reads torch, transformers and the other dependencies from this environment's site-packages
through a ``.pth`` line, so the test stays quick and offline. attnscope itself comes only from
the wheel: the new venv's own site-packages precede the borrowed ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

import attnscope

ROOT = Path(__file__).resolve().parents[2]
ASSETS = sorted(
    str(path.relative_to(ROOT / "src")).replace(os.sep, "/")
    for folder in ("render/assets", "app/assets")
    for path in (ROOT / "src" / "attnscope" / folder).iterdir()
    if path.suffix in {".js", ".css", ".html"}
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "--no-index", "-q", "-w", str(out),
                           str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("attnscope-*.whl")
    return built


def test_the_wheel_holds_every_asset_and_the_version(wheel):
    assert wheel.name.startswith(f"attnscope-{attnscope.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"attnscope/render/assets/views.js", "attnscope/render/assets/views.css",
            "attnscope/render/assets/report.js", "attnscope/app/assets/app.js",
            "attnscope/app/assets/app.css", "attnscope/app/assets/app.html",
            "attnscope/py.typed"} <= names
    assert set(ASSETS) <= names, set(ASSETS) - names  # an asset added later is shipped too
    sources = {str(path.relative_to(ROOT / "src")).replace(os.sep, "/")
               for path in (ROOT / "src" / "attnscope").rglob("*.py")}
    assert sources <= names, sources - names
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert "attnscope = attnscope.__main__:main" in zipfile.ZipFile(wheel).read(
        entry_points).decode()


def test_the_wheel_installed_in_a_fresh_venv_runs_the_demo(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True).stdout
    # the dependencies come from this environment; attnscope must come from the wheel
    Path(site.strip(), "borrowed_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false")
    script = env_dir / ("Scripts/attnscope.exe" if os.name == "nt" else "bin/attnscope")
    where = subprocess.run([str(python), "-c", "import attnscope; print(attnscope.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert Path(where.stdout.strip()).is_relative_to(env_dir), where.stdout
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                             env=env, cwd=tmp_path)
    assert version.stdout.strip() == f"attnscope {attnscope.__version__}"

    demo = subprocess.run([str(script), "demo", "-o", "demo"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    written = tmp_path / "demo"
    for page in ("view.html", "report.html"):
        html = (written / page).read_text(encoding="utf-8")
        # the pages carry the installed package's scripts inline, not a link to a file
        assert "<script" in html and "attnscope/render/assets" not in html, page
        assert "DecompressionStream" in html, page
    assert any(written.glob("*.png")) and any(written.glob("*.npz"))
