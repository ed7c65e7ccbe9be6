"""mypy finds no error in src/, at the strictness pyproject.toml states ([tool.mypy])."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install -e '.[types]')")
def test_mypy_passes_over_src(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
                           "--no-error-summary"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]


def test_the_strictness_is_stated_and_covers_the_public_modules():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert config["files"] == ["src/attnscope"] and config["check_untyped_defs"] is True
    strict = next(o for o in config["overrides"] if o.get("disallow_untyped_defs"))
    import attnscope as at

    # every module a public name comes from is held to annotating every function
    modules = set(strict["module"])
    for module in set(at._EXPORTS.values()):
        assert module in modules or module.rsplit(".", 1)[0] + ".*" in modules, module
    # no blanket switch: errors are never silenced for attnscope's own code
    assert not config.get("ignore_errors") and not config.get("ignore_missing_imports")
    assert all(not o.get("ignore_errors") for o in config["overrides"])
