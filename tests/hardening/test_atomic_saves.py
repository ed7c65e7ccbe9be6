"""Saving never loses a file: real processes killed mid-save, real write errors.

A child process saves a trace, a view page and a figure over the same three paths in a loop;
the test interrupts it (SIGINT, as Ctrl-C does) or kills it (SIGKILL) at random moments. After
each, every file is either the previous one whole or the new one whole. Write errors (a folder
in the way, a missing folder, a name too long, /proc and /sys, a file-size limit reached
mid-write) are one sentence each and leave an existing file as it was.
"""

from __future__ import annotations

import json
import os
import random
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


# A worker process saves a trace, a view page and a figure over the same three paths in a loop
# until the test interrupts or kills it. Each is started (spawned, never forked from a process
# with threads) ahead of its round and waits: on "start" it replaces the three files once with
# the text that is not on disk and says "flipped"; on "go" it saves in a loop.
SAVER = """
    import signal
    import sys
    from pathlib import Path
    import attnscope as at

    # Ctrl-C acts as in a terminal even when the tests run as a background job, whose children
    # start with SIGINT ignored (POSIX shells ignore it for background commands)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    traces = [at.Trace.load(folder / "a.npz"), at.Trace.load(folder / "b.npz")]
    views = [at.head_view(t) for t in traces]
    figures = [at.heatmap(t, layer=0, head=0) for t in traces]

    def save(i):
        traces[i % 2].save(out / "trace.npz")
        views[i % 2].save(out / "view.html")
        figures[i % 2].save(out / "figure.png", dpi=60)

    print("ready", flush=True)
    try:
        assert sys.stdin.readline() == "start\\n"
        i = 1 if at.Trace.load(out / "trace.npz").text == traces[0].text else 0
        save(i)
        print("flipped", flush=True)
        assert sys.stdin.readline() == "go\\n"
        while True:
            i += 1
            save(i)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as err:
        # Ctrl-C that lands inside a library can reach us wrapped in another error
        from attnscope.__main__ import _caused_by_interrupt
        if _caused_by_interrupt(err):
            sys.exit(130)
        raise
"""


def _expect(worker: subprocess.Popen, line: str) -> None:
    assert worker.stdout is not None
    got = worker.stdout.readline()
    assert got == line + "\n", (got, worker.poll())


def _tell(worker: subprocess.Popen, line: str) -> None:
    assert worker.stdin is not None
    worker.stdin.write(line + "\n")
    worker.stdin.flush()


def _check_whole(out: Path, a: at.Trace, b: at.Trace) -> str:
    """Each of the three files is one save's whole file; returns the trace's text."""
    back = at.Trace.load(out / "trace.npz")  # whole, or this raises
    original = a if back.text == a.text else b
    assert np.array_equal(back.attentions, original.attentions)
    assert back.tokens == original.tokens
    page = (out / "view.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    with Image.open(out / "figure.png") as image:
        image.load()  # decodes every row: a cut file raises
        assert image.width > 50 and image.height > 50
    return back.text


def test_interrupted_and_killed_saves_leave_each_file_whole(tmp_path, pair):
    a, b = pair
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    out = tmp_path / "out"
    out.mkdir()
    a.save(out / "trace.npz")
    at.head_view(a).save(out / "view.html")
    at.heatmap(a, layer=0, head=0).save(out / "figure.png", dpi=60)

    def start_worker() -> subprocess.Popen:
        return run_child(SAVER, str(tmp_path), str(out), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)

    rng = random.Random(8)
    rounds = [signal.SIGKILL, signal.SIGINT] * 6  # (SIGINT last: it leaves no temporary)
    workers = [start_worker()]
    on_disk = a.text
    try:
        for number, sig in enumerate(rounds):
            worker = workers[-1]
            if number + 1 < len(rounds):
                workers.append(start_worker())  # imports while this round runs
            _expect(worker, "ready")
            _tell(worker, "start")
            _expect(worker, "flipped")
            # The worker waits here, between saves: its saves replaced the files whole, and
            # removed the temporary files the previous round's SIGKILL left behind.
            flipped_to = _check_whole(out, a, b)
            assert flipped_to == (b.text if on_disk == a.text else a.text)
            assert leftovers(out) == []
            _tell(worker, "go")
            time.sleep(rng.uniform(0.0, 0.6))  # any moment of the loop: every one must hold
            worker.send_signal(sig)
            status = worker.wait(timeout=600)
            assert status == (130 if sig == signal.SIGINT else -signal.SIGKILL), status
            on_disk = _check_whole(out, a, b)
            if sig == signal.SIGINT:
                assert leftovers(out) == []  # Ctrl-C cleans up its temporary file
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(timeout=30)
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
        # raise_signal runs the handler in this thread before it returns, as a real Ctrl-C
        # does at the next instruction; os.kill can reach another thread and arrive late.
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        if error is not None:
            raise error("Invalid affine transformation matrix") from None


@pytest.fixture
def python_ctrl_c():
    """SIGINT handled as Python's own default (an earlier test or library may have changed it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_that_a_library_replaced_or_swallowed_still_ends_the_save(tmp_path,
                                                                          python_ctrl_c):
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
    stdout, stderr = child.communicate(timeout=600)
    assert child.returncode == 0, stderr
    messages = json.loads(stdout)
    for name, message in messages.items():
        assert message == f"Cannot write the {_WHAT[name]} '{tmp_path / name}': file too large.", (
            message)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert leftovers(tmp_path) == []


_WHAT = {"trace.npz": "trace", "view.html": "page", "figure.png": "figure"}


def test_a_save_removes_what_a_killed_save_left_and_nothing_else(tmp_path, pair):
    """A kill leaves ``.NAME.XXXXXXXX.tmp``; the next save to NAME removes it, but not a
    temporary file a live save holds, nor another file's, nor a file that only looks alike."""
    import fcntl

    def hidden(name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(b"x" * 1000)
        return path

    stale = [hidden(".trace.npz.abcd_123.tmp"), hidden(".trace.npz.zz99zz99.tmp")]
    other_file = hidden(".other.npz.abcd_123.tmp")
    look_alike = hidden(".trace.npz.not-ours.tmp")
    held = hidden(".trace.npz.held0000.tmp")
    holder = os.open(held, os.O_RDONLY)  # a save still going, in this or another process
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        pair[0].save(tmp_path / "trace.npz")
        assert not any(path.exists() for path in stale)
        assert other_file.exists() and look_alike.exists() and held.exists()
    finally:
        os.close(holder)
    pair[1].save(tmp_path / "trace.npz")  # the lock is gone: now it is a leftover
    assert not held.exists()
    assert at.Trace.load(tmp_path / "trace.npz").text == pair[1].text


def test_ctrl_c_while_a_save_renames_or_cleans_up_is_held_until_it_is_done(
        tmp_path, python_ctrl_c, monkeypatch):
    """An interrupt during the save's own bookkeeping (here: the rename, and the removal of
    the temporary file after an error) still ends as KeyboardInterrupt, with no temporary
    file stranded and the file the rename was making in place."""
    import attnscope.files as files

    path = tmp_path / "page.html"
    real_replace, real_unlink = os.replace, Path.unlink

    def replace_with_ctrl_c(src, dst):
        signal.raise_signal(signal.SIGINT)  # held back: the rename still happens
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        write_text(path, "<p>new</p>")
    assert path.read_text() == "<p>new</p>" and leftovers(tmp_path) == []
    monkeypatch.setattr(files.os, "replace", real_replace)

    def unlink_with_ctrl_c(self, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt), atomic_write(path, "w") as handle:
        handle.write("<p>half</p>")
        raise RuntimeError("a failure mid-write")
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert path.read_text() == "<p>new</p>" and leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
