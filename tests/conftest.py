"""Shared fixtures: the embedded real model and tiny random models of every family.

Models are built and loaded once per test session (session-scoped), through attnscope.load,
so every test exercises transformers' own from_pretrained path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import attnscope as at
from attnscope.testing import TINY_FAMILIES, build_tiny_model

SEED_A = "leaves fall in autumn"
SEED_B = "autumn is marked by colorful foliage"
SEED_SENTENCE = "The girl poured water into a tall glass until it overflowed."


@pytest.fixture(scope="session")
def embedded() -> at.LoadedModel:
    """The embedded default model, all-MiniLM-L6-v2 (6 layers x 12 heads), on the CPU."""
    return at.load(device="cpu")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """family -> directory of a saved tiny random model (2 layers, 4 heads, hidden 32)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: build_tiny_model(family, root) for family in TINY_FAMILIES}


@pytest.fixture(scope="session")
def tiny_models(tiny_dirs) -> dict[str, at.LoadedModel]:
    """family -> LoadedModel of the tiny model, loaded with attnscope.load."""
    return {family: at.load(path, device="cpu") for family, path in tiny_dirs.items()}


@pytest.fixture(params=TINY_FAMILIES)
def tiny(request, tiny_models) -> at.LoadedModel:
    """Each tiny family in turn (parametrized)."""
    return tiny_models[request.param]


@pytest.fixture(scope="session")
def seed_pair_trace(embedded) -> at.Trace:
    return at.capture(embedded, SEED_A, SEED_B)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of a Chromium binary; skips (outside CI) when there is none."""
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    if os.environ.get("CI"):
        pytest.fail("Chromium is required in CI: apt-get install -y chromium")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="session")
def explorer_server():
    """``attnscope serve`` with the embedded model, running for the whole session."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from tests.explorer_server import ExplorerServer

    server = ExplorerServer()
    yield server
    server.stop()
