"""Killing a corpus run at a known point, for the tests that resume one."""

from __future__ import annotations

import re
import signal
import subprocess


def kill_after_committed(command: list[str], env: dict[str, str], counted: int) -> None:
    """Start ``attnscope corpus`` (``command``, without ``-q``: its progress bar is read) and
    SIGKILL it once the bar counts at least ``counted`` texts.

    The bar counts a batch only after its transaction commits, so the store then holds at least
    the texts counted (minus problem rows counted when they were planned). Waiting on what the
    run reports, never on a span of time, holds on a busy machine.
    """
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    shown = b""
    while proc.poll() is None:
        chunk = proc.stderr.read1(4096)
        if not chunk:
            break
        shown += chunk
        counts = [int(n) for n in re.findall(rb"(\d+)/\d+ \[", shown)]
        if counts and max(counts) >= counted:
            break
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
