"""What a page in the test browser did besides drawing: the requests it made, the errors it
logged or threw, and the dialogs it opened (``alert(1)`` from a token would be one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PageLog:
    requests: list[str] = field(default_factory=list)
    #: console errors and uncaught exceptions ("console error (URL): ...", "page error: ...")
    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def watch(page: Any) -> PageLog:
    """Start recording ``page``'s requests, errors and dialogs (each dialog is dismissed).

    Console warnings are not counted: Chromium warns about the tests' own pixel readbacks.
    """
    log = PageLog()
    page.on("request", lambda request: log.requests.append(request.url))
    page.on("console", lambda message: message.type == "error" and log.problems.append(
        f"console error ({message.location.get('url', '')}): {message.text}"))
    page.on("pageerror", lambda error: log.problems.append(f"page error: {error}"))

    def on_dialog(dialog: Any) -> None:
        log.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return log
