"""Saving never loses a file: real processes killed mid-save, real write errors.

A child process saves a trace, a view page and a figure over the same three paths in a loop;
the test interrupts it (SIGINT, as Ctrl-C does) or kills it (SIGKILL) at random moments. After
each, every file is either the previous one whole or the new one whole. Write errors (a folder
in the way, a missing folder, a name too long, /proc and /sys, a file-size limit reached
mid-write) are one sentence each and leave an existing file as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import matplotlib.artist
import numpy as np
import pytest
from PIL import Image

import attnscope as at
from attnscope.errors import AttnscopeError
from attnscope.files import atomic_write, write_text
from attnscope.testing import build_tiny_model

SRC = Path(at.__file__).resolve().parents[1]
TEXTS = ("leaves fall in autumn", "autumn is marked by colorful foliage")


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[at.Trace, at.Trace]:
    """Two traces of a tiny BERT, saved as a.npz and b.npz for the child processes."""
    folder = tmp_path_factory.mktemp("pair")
    model = at.load(build_tiny_model("bert", folder), device="cpu")
    return at.capture(model, TEXTS[0]), at.capture(model, TEXTS[1])


def run_child(code: str, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            text=True, **popen)


def leftovers(folder: Path) -> list[str]:
    """Temporary files atomic_write left behind (hidden ``.NAME.*.tmp``)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")
                  and p.name.endswith(".tmp"))


# One process imports attnscope once, then forks a worker per round that saves in a loop until
# the test interrupts or kills it; it reports the worker's pid and then its exit status.
SAVER = """
    import os, sys
    from pathlib import Path
    import attnscope as at

    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    traces = [at.Trace.load(folder / "a.npz"), at.Trace.load(folder / "b.npz")]
    views = [at.head_view(t) for t in traces]
    figures = [at.heatmap(t, layer=0, head=0) for t in traces]
    print("ready", flush=True)
    for round_number in sys.stdin:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                i = 1  # the files start as trace a's; the first writes are b's
                while True:
                    traces[i % 2].save(out / "trace.npz")
                    views[i % 2].save(out / "view.html")
                    figures[i % 2].save(out / "figure.png", dpi=60)
                    i += 1
            except KeyboardInterrupt:
                code = 130
            except BaseException as err:
                # Ctrl-C that lands inside a library can reach us wrapped in another error
                from attnscope.__main__ import _caused_by_interrupt
                if _caused_by_interrupt(err):
                    code = 130
                else:
                    import traceback
                    traceback.print_exc()
                    code = 1
            finally:
                os._exit(code)
        print(pid, flush=True)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def _status_within(saver: subprocess.Popen, pid: int, seconds: float) -> int:
    """The worker's exit status as the saver reports it; a worker still alive after
    ``seconds`` (a forked process can stall on a lock another thread held at the fork) is
    killed, so the test never hangs."""
    assert saver.stdout is not None
    ready, _, _ = select.select([saver.stdout], [], [], seconds)
    if not ready:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return int(saver.stdout.readline())


def test_interrupted_and_killed_saves_leave_each_file_whole(tmp_path, pair):
    a, b = pair
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    out = tmp_path / "out"
    out.mkdir()
    a.save(out / "trace.npz")
    at.head_view(a).save(out / "view.html")
    at.heatmap(a, layer=0, head=0).save(out / "figure.png", dpi=60)

    saver = run_child(SAVER, str(tmp_path), str(out), stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE)
    assert saver.stdin is not None and saver.stdout is not None
    try:
        assert saver.stdout.readline().strip() == "ready"
        rng = random.Random(8)
        seen_texts, stale, stuck = set(), 0, 0
        sent = {signal.SIGINT: 0, signal.SIGKILL: 0}
        deadline = time.monotonic() + 20
        for round_number in range(16):
            if time.monotonic() > deadline and round_number >= 10:
                break
            sig = signal.SIGINT if round_number % 2 == 0 else signal.SIGKILL
            saver.stdin.write(f"{round_number}\n")
            saver.stdin.flush()
            pid = int(saver.stdout.readline())
            time.sleep(rng.uniform(0.05, 1.0))
            os.kill(pid, sig)
            sent[sig] += 1
            status = _status_within(saver, pid, seconds=15)
            if status == -signal.SIGKILL and sig == signal.SIGINT:
                stuck += 1  # the forked worker stalled and was killed: still a kill mid-write
                sig = signal.SIGKILL
            assert status == (130 if sig == signal.SIGINT else -signal.SIGKILL), status

            back = at.Trace.load(out / "trace.npz")  # whole, or this raises
            original = a if back.text == a.text else b
            assert np.array_equal(back.attentions, original.attentions)
            assert back.tokens == original.tokens
            seen_texts.add(back.text)
            page = (out / "view.html").read_text(encoding="utf-8")
            assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
            with Image.open(out / "figure.png") as image:
                image.load()  # decodes every row: a cut file raises
                assert image.width > 50 and image.height > 50
            if sig == signal.SIGINT:
                assert leftovers(out) == []  # Ctrl-C cleans up its temporary file
            else:
                stale += len(leftovers(out))  # SIGKILL cannot: hidden .NAME.*.tmp may remain
                for name in leftovers(out):
                    (out / name).unlink()
    finally:
        saver.kill()
        saver.wait(timeout=10)
    assert sent[signal.SIGINT] >= 5 and sent[signal.SIGKILL] >= 5, sent
    assert stuck <= 2, f"{stuck} forked workers stalled"
    assert seen_texts == set(TEXTS)  # the loop really replaced the files between kills
    assert sorted(p.name for p in out.iterdir()) == ["figure.png", "trace.npz", "view.html"]


# ----- write errors ------------------------------------------------------------------------------

def _savers(trace: at.Trace):
    """(extension, save function) for a trace, a view page and a figure."""
    return [
        (".npz", trace.save),
        (".html", at.head_view(trace).save),
        (".png", at.heatmap(trace, layer=0, head=0).save),
    ]


def _bad_places(tmp_path: Path, ext: str) -> list[tuple[Path, str]]:
    in_the_way = tmp_path / f"folder{ext}"
    in_the_way.mkdir(exist_ok=True)
    return [
        (in_the_way, "it is a folder"),
        (tmp_path / "missing" / f"file{ext}", "does not exist"),
        (tmp_path / ("n" * 300 + ext), "the file name is too long"),
        (tmp_path / ("n" * 300) / f"file{ext}", "the file name is too long"),
        # procfs and sysfs make no files, even for root (chmod'ed folders would not stop it)
        (Path(f"/proc/attnscope-test{ext}"), "the folder does not accept new files"),
        (Path(f"/proc/self/attnscope-test{ext}"), "the folder does not accept new files"),
        (Path(f"/sys/attnscope-test{ext}"), "permission denied"),
    ]


def test_write_errors_are_one_sentence(tmp_path, pair):
    for ext, save in _savers(pair[0]):
        for path, reason in _bad_places(tmp_path, ext):
            with pytest.raises(AttnscopeError) as caught:
                save(path)
            message = str(caught.value)
            assert message.startswith("Cannot write the ") and f"'{path}'" in message, message
            assert reason in message and "\n" not in message, message
            assert not os.path.isfile(path)  # (os.path never raises, even for long names)
        for odd in (f"lone \udc00\ud800 surrogate{ext}", f"nul\0inside{ext}"):
            with pytest.raises(AttnscopeError, match="holds characters that cannot be a file"):
                save(tmp_path / odd)
    assert leftovers(tmp_path) == []


def test_a_failing_figure_leaves_the_previous_file(tmp_path, pair):
    class Broken(matplotlib.artist.Artist):
        def draw(self, renderer):
            raise RuntimeError("this artist cannot be drawn")

    path = tmp_path / "figure.png"
    figure = at.heatmap(pair[0], layer=0, head=0)
    figure.save(path)
    before = path.read_bytes()
    figure.add_artist(Broken())
    with pytest.raises(RuntimeError, match="cannot be drawn"):
        figure.save(path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_an_error_or_ctrl_c_mid_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "page.html"
    write_text(path, "<p>the previous page</p>")
    for interruption in (KeyboardInterrupt, RuntimeError):
        # 200 KB reach the temporary file before the interruption: it comes mid-write.
        with pytest.raises(interruption), atomic_write(path, "w", what="the page") as handle:
            handle.write("<p>fine</p>" * 20_000)
            handle.flush()
            assert len(leftovers(tmp_path)) == 1
            raise interruption()
        assert path.read_text() == "<p>the previous page</p>"
        assert leftovers(tmp_path) == []



def _ctrl_c_turned_into(error: type[Exception] | None) -> None:
    """A real Ctrl-C (SIGINT to this process) caught the way compiled library code can catch
    it: replaced by ``error`` (as matplotlib's renderer gives "Invalid affine transformation
    matrix"), or swallowed when ``error`` is None."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises here, long before 5 s
    except KeyboardInterrupt:
        if error is not None:
            raise error("Invalid affine transformation matrix") from None


def test_ctrl_c_that_a_library_replaced_or_swallowed_still_ends_the_save(tmp_path):
    path = tmp_path / "figure.png"
    write_text(path, "the previous figure")
    for error in (ValueError, RuntimeError, None):
        with pytest.raises(KeyboardInterrupt), atomic_write(path, "wb") as handle:
            handle.write(b"half a figure")
            _ctrl_c_turned_into(error)
            handle.write(b"the rest")
        assert path.read_text() == "the previous figure"
        assert leftovers(tmp_path) == []
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(ValueError, match="a real error"), atomic_write(path, "wb"):
        raise ValueError("a real error")  # without Ctrl-C an error stays what it is

# A child whose files may not grow past 4 KB (RLIMIT_FSIZE): each save fails mid-write with
# "file too large", as on a full disk, and prints the message it got.
LIMITED = """
    import json, resource, signal, sys
    from pathlib import Path
    import attnscope as at

    out = Path(sys.argv[1])
    trace = at.Trace.load(out / "source.npz")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    messages = {}
    for name, save in [("trace.npz", trace.save), ("view.html", at.head_view(trace).save),
                       ("figure.png", at.heatmap(trace, layer=0, head=0).save)]:
        try:
            save(out / name)
            messages[name] = None
        except at.AttnscopeError as err:
            messages[name] = str(err)
    print(json.dumps(messages))
"""


def test_a_write_failing_midway_leaves_the_previous_file(tmp_path, pair):
    a, b = pair
    b.save(tmp_path / "source.npz")
    a.save(tmp_path / "trace.npz")
    at.head_view(a).save(tmp_path / "view.html")
    at.heatmap(a, layer=0, head=0).save(tmp_path / "figure.png")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert min(len(data) for data in before.values()) > 4096  # each save must pass the limit

    child = run_child(LIMITED, str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    messages = json.loads(stdout)
    for name, message in messages.items():
        assert message == f"Cannot write the {_WHAT[name]} '{tmp_path / name}': file too large.", (
            message)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert leftovers(tmp_path) == []


_WHAT = {"trace.npz": "trace", "view.html": "page", "figure.png": "figure"}
