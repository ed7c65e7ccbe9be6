"""The example notebooks in real notebook front ends, driven by Chromium.

* JupyterLab: a real server started here on 127.0.0.1 (a free port, a token, no browser of its
  own), every notebook opened, all its cells run by JupyterLab's own "Run All" command and the
  notebook saved; then every view's output frame must have drawn (its canvases hold non-blank
  pixels), nothing may log an error, two views in one notebook must keep apart, and the saved
  file must hold no error or warning output.
* ``jupyter nbconvert --execute``: the views notebook executed by nbconvert in a fresh kernel and
  exported with the classic notebook's HTML template; the exported page, opened in Chromium,
  draws every view too.

(tests/integration/test_examples.py runs every notebook's code in-process; these tests check
what the front ends show.)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser.pages import watch

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.ipynb"))
VIEWS_NOTEBOOK = ROOT / "examples" / "02_views.ipynb"

# Counted inside one output frame: canvases with drawn pixels, the root's state and its id.
FRAME_STATE = """() => {
    const root = document.querySelector('.attnscope-root');
    if (!root) return null;
    const drawn = [...root.querySelectorAll('canvas')].map(c => {
        if (!c.width || !c.height) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let k = 0; k < d.length; k += 4)
            if (d[k + 3] && (d[k] < 250 || d[k + 1] < 250 || d[k + 2] < 250)) n++;
        return n;
    });
    const select = root.querySelector('.as-layer select');
    return {id: root.id, ready: !!root.dataset.ready, error: root.dataset.error || null,
            drawn, layer: select ? select.value : null,
            tabs: [...root.querySelectorAll('[data-kind]')].map(n => n.dataset.kind)};
}"""


def _kernel_env(home: Path) -> dict[str, str]:
    """The environment of the server and its kernels: this checkout's attnscope first, offline,
    and Jupyter's per-user folders in a temporary home (nothing read from or left in ~)."""
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg",
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               IPYTHONDIR=str(home / "ipython"), JUPYTER_PLATFORM_DIRS="1")
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 serving ``root``; ``stop()`` shuts it and its kernels
    down through the server's own shutdown route."""

    def __init__(self, root: Path, home: Path) -> None:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        settings = home / "settings"
        # Every cell's output stays in the page (no virtual scrolling), and no news is fetched.
        for plugin, values in {
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification": {
                "fetchNews": "false", "checkForUpdates": False},
        }.items():
            package, name = plugin.rsplit("/", 1)
            path = settings / package / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values), encoding="utf-8")
        self.log = (home / "server.log").open("w+", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--allow-root", "--ServerApp.terminals_enabled=False",
             "--expose-app-in-browser", "--LabApp.news_url=None",
             "--LabApp.extension_manager=readonly",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             f"--LabApp.user_settings_dir={settings}",
             f"--LabApp.workspaces_dir={home / 'workspaces'}"],
            cwd=root, env=_kernel_env(home), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(self._url("/api/status"), timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.server_log()
                self.stop()
                pytest.fail(f"JupyterLab did not start:\n{log}")
            time.sleep(0.5)

    def _url(self, path: str) -> str:
        return f"{self.base}{path}?token={self.token}"

    def notebook_url(self, name: str) -> str:
        return self._url(f"/lab/tree/{name}")

    def server_log(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                request = urllib.request.Request(self._url("/api/shutdown"), method="POST")
                urllib.request.urlopen(request, timeout=10).close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("jupyterlab")
    root = tmp_path_factory.mktemp("notebooks")
    for notebook in EXAMPLES:
        shutil.copy(notebook, root / notebook.name)
    server = JupyterLab(root, tmp_path_factory.mktemp("jupyter-home"))
    yield server, root
    server.stop()


def _frame_states(page, count: int, timeout_s: float = 30) -> list[dict]:
    """The state of every attnscope output frame once all ``count`` have drawn or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = []
        for frame in page.frames:
            if frame is page.main_frame:
                continue
            try:
                state = frame.evaluate(FRAME_STATE)
            except Exception:  # a frame still loading, or one that just went away
                state = None
            if state is not None:
                states.append(state)
        settled = [s for s in states if s["error"] or (s["ready"] and any(s["drawn"]))]
        if len(settled) >= count or time.monotonic() > deadline:
            return states
        time.sleep(0.25)


def _views_in(notebook: Path) -> int:
    """How many outputs of an executed ``notebook`` are attnscope views."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    html = ["".join(o.get("data", {}).get("text/html", "")) for c in cells
            if c["cell_type"] == "code" for o in c["outputs"]]
    return sum("attnscope-root" in h for h in html)


def _switch_one_layer(page) -> tuple[list[dict], list[dict]]:
    """Set the layer-2 head view to layer 3; the states of every view before and after (the
    switched one first)."""
    frames = [f for f in page.frames if f is not page.main_frame]
    states = [f.evaluate(FRAME_STATE) for f in frames]
    order = sorted(range(len(frames)), key=lambda i: (states[i] or {}).get("layer") != "2")
    frames = [frames[i] for i in order if states[i] is not None]
    before = [f.evaluate(FRAME_STATE) for f in frames]
    # (Chromium does not paint a cross-origin frame out of view: bring it into view first.)
    frames[0].frame_element().scroll_into_view_if_needed(timeout=120_000)
    frames[0].evaluate("""() => { const s = document.querySelector('.as-layer select');
        s.value = '3'; s.dispatchEvent(new Event('change', {bubbles: true})); }""")
    deadline = time.monotonic() + 120  # a hang guard: the loop ends when the view redraws
    while True:
        after = [f.evaluate(FRAME_STATE) for f in frames]
        if after[0]["drawn"] != before[0]["drawn"] or time.monotonic() > deadline:
            return before, after
        time.sleep(0.2)


def _check_frames(states: list[dict], expected: int) -> None:
    assert len(states) == expected, states
    for state in states:
        assert state["error"] is None and state["ready"], state
        # It drew: a canvas with pixels (the model view's closed-head canvas may stay empty).
        assert state["drawn"] and max(state["drawn"]) > 100, state
    # Each output is its own document with its own root: no two share an id.
    assert len({s["id"] for s in states}) == expected


@pytest.mark.parametrize("notebook", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_notebook_runs_in_jupyterlab(lab, browser, notebook):
    server, root = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = watch(page).problems
    try:
        page.goto(server.notebook_url(notebook.name) + "&reset")  # no restored workspace
        page.wait_for_function(
            "() => window.jupyterapp && jupyterapp.shell.currentWidget"
            " && jupyterapp.shell.currentWidget.context"
            " && jupyterapp.shell.currentWidget.sessionContext.session"
            " && jupyterapp.shell.currentWidget.sessionContext.session.kernel"
            " && jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
            timeout=60_000)
        page.evaluate("() => jupyterapp.commands.execute('notebook:run-all-cells')")
        # Every code cell has its execution count once the last one has run.
        page.wait_for_function(
            "() => { const p = [...jupyterapp.shell.currentWidget.node"
            ".querySelectorAll('.jp-CodeCell .jp-InputPrompt')];"
            " return p.length && p.every(n => /\\[\\d+\\]/.test(n.textContent)); }",
            timeout=120_000, polling=500)
        shown_errors = page.evaluate(
            "() => [...jupyterapp.shell.currentWidget.node.querySelectorAll("
            "'.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]')]"
            ".map(n => n.textContent)")
        page.evaluate("() => jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function(
            "() => !jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)
        expected = _views_in(root / notebook.name)
        states = _frame_states(page, expected)
        if notebook == VIEWS_NOTEBOOK:
            before_after = _switch_one_layer(page)
        # Shut the kernel down and close the notebook: the next one opens on its own.
        page.evaluate("() => jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        page.evaluate("() => jupyterapp.commands.execute('application:close-all')")
    finally:
        page.close()
    assert shown_errors == []  # no traceback, no warning (progress bars included)
    _check_frames(states, expected)
    if notebook == VIEWS_NOTEBOOK:
        # Two head views in one notebook keep their own state: the first opened on layer 2,
        # the bertviz-style one on its default (the last layer).
        layers = sorted(s["layer"] for s in states if s["layer"] is not None)
        assert layers == ["0", "2", "4"], states  # bertviz-style, head view, neuron view
        # Switching the layer of one view leaves every other view as it was.
        before, after = before_after
        assert after[0]["layer"] == "3" and before[0]["drawn"] != after[0]["drawn"]
        assert before[1:] == after[1:]
    assert problems == []
    saved = json.loads((root / notebook.name).read_text(encoding="utf-8"))
    outputs = [o for c in saved["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert outputs, "the saved notebook holds the outputs"
    assert [o for o in outputs if o["output_type"] == "error"
            or (o["output_type"] == "stream" and o["name"] == "stderr")] == []


def test_nbconvert_execute_and_classic_html(browser, tmp_path):
    pytest.importorskip("nbconvert")
    shutil.copy(VIEWS_NOTEBOOK, tmp_path / VIEWS_NOTEBOOK.name)
    env = _kernel_env(tmp_path / "home")

    def nbconvert(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        for warning in ("MissingIDFieldWarning", "IProgress", "Traceback"):
            assert warning not in done.stderr, done.stderr
        return done

    # Executed by nbconvert in a fresh kernel, then exported as the classic notebook's page.
    nbconvert("--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=120",
              "--output", "executed", VIEWS_NOTEBOOK.name)
    executed = tmp_path / "executed.ipynb"
    expected = _views_in(executed)
    assert expected == 4  # head view, model view, neuron view and the bertviz-style head view
    nbconvert("--to", "html", "--template", "classic", "--output", "classic", executed.name)
    exported = tmp_path / "classic.html"
    assert 'class="output_area"' in exported.read_text(encoding="utf-8")  # the classic layout
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = watch(page).problems
    try:
        page.goto(exported.as_uri())
        states = _frame_states(page, expected)
    finally:
        page.close()
    _check_frames(states, expected)
    # Only the views' own frames count here: nbconvert's page asks a CDN for its own scripts,
    # which fails offline.
    assert [p for p in problems if "about:srcdoc" in p or "page error" in p] == []
