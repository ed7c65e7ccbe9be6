"""The explorer: a local web app to type a text and see, explain and compare its attention.

    attnscope serve                                  # the embedded model, on 127.0.0.1:8000
    attnscope serve --model ./my-bert --model gpt2   # the models a visitor may pick from
    attnscope serve --corpus stats.duckdb            # and browse a corpus store

Or from Python::

    from attnscope.app import Limits, create_app, serve
    serve(["./my-bert"], port=8001, limits=Limits(max_tokens=128))

It needs the ``app`` extra (``pip install 'attnscope[app]'``: FastAPI and uvicorn). Every view
it shows is drawn by :mod:`attnscope.render`'s view script, the same one saved pages use.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attnscope.app.limits import Limits
from attnscope.errors import AttnscopeError

if TYPE_CHECKING:
    from attnscope.app.runtime import Models

__all__ = ["Limits", "Models", "create_app", "is_loopback", "load_models", "serve"]


def _require_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise AttnscopeError(
            f"The explorer needs FastAPI and uvicorn ({err.name} is missing): "
            "pip install 'attnscope[app]'."
        ) from None


def __getattr__(name: str) -> Any:
    if name == "Models":
        from attnscope.app.runtime import Models

        return Models
    raise AttributeError(f"module 'attnscope.app' has no attribute {name!r}")


def create_app(models: Models | Sequence[Any], limits: Limits | None = None, *,
               corpus: Any = None, long: Any = None):
    """The explorer as an ASGI application (FastAPI) for ``models``: a :class:`Models`, or
    LoadedModel objects (the first is the default). ``corpus``: a corpus store to browse (its
    ``.duckdb`` path or a :class:`~attnscope.corpora.result.CorpusResult`), opened read-only
    once, here. ``long``: ``{name: LazyTrace}`` to serve as long views, tiles computed on
    request (:mod:`attnscope.app.long`). See :mod:`attnscope.app.api`."""
    _require_extra()
    from attnscope.app.api import create_app as _create
    from attnscope.app.runtime import Models

    if not isinstance(models, Models):
        models = Models(list(models))
    return _create(models, limits, corpus=corpus, long=long)


def load_models(names: Sequence[str | None] | None = None, device: str | None = None) -> Models:
    """Load the allowlist once: hub names or local directories (None or empty: the embedded
    default model)."""
    import attnscope as at
    from attnscope.app.runtime import Models

    names = list(names or [None])
    return Models([at.load(name, device=device) for name in names])


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warm_up(models: Models) -> None:
    """Run each model once, so the first visitor's request is as quick as the rest (torch
    sets up its kernels on the first pass)."""
    import attnscope as at

    for name in models.names:
        model = models.get(name)
        decoder_text = "Warm up." if model.architecture == "encoder-decoder" else None
        with contextlib.suppress(AttnscopeError):
            at.capture(model, "Warm up.", decoder_text)


def _check_port_free(host: str, port: int) -> None:
    """One sentence when ``host:port`` cannot be listened on (in use, not an address of this
    machine, a privileged port), found by binding it as uvicorn will, then letting it go."""
    import errno
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        raise AttnscopeError(f"Cannot serve on {host!r}: it is not a name or address of this "
                             "machine.") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                reason = "another program is listening there; stop it or pick another --port"
            elif err.errno == errno.EACCES:
                reason = "ports below 1024 need root; pick another --port"
            elif err.errno == errno.EADDRNOTAVAIL:
                reason = "it is not an address of this machine"
            else:
                from attnscope.files import describe_os_error

                reason = describe_os_error(err)
            raise AttnscopeError(f"Cannot serve on {host}:{port}: {reason}.") from None


def serve(models: Sequence[str | None] | None = None, *, host: str = "127.0.0.1",
          port: int = 8000, limits: Limits | None = None, device: str | None = None,
          corpus: Any = None, log_level: str = "warning", torch_threads: int | None = 1,
          long: Any = None) -> None:
    """Load ``models``, print the explorer's URL and serve until Ctrl-C.

    ``corpus``: a corpus store to browse (a ``.duckdb`` path or a ``CorpusResult``); it is
    opened first, so a wrong file is told before any model loads.

    ``long``: saved lazy traces (``.npz`` paths; each served at ``/long/<file stem>``) or
    ``{name: LazyTrace}``, read before any model loads.

    ``torch_threads``: CPU threads of one model run (None: torch's default, one per core).
    One keeps every request quick when several arrive at once or the machine is busy: a
    run on two threads that must wait for a busy core can take ten times as long.
    """
    _require_extra()
    import uvicorn

    if not 0 <= port <= 65535:
        raise AttnscopeError(f"Port {port} is out of range: use 1 to 65535 (or 0 for any free "
                             "port).")
    _check_port_free(host, port)  # before minutes of loading
    if torch_threads is not None:
        if torch_threads < 1:
            raise AttnscopeError(f"--torch-threads must be at least 1, not {torch_threads}.")
        import torch

        torch.set_num_threads(torch_threads)
    if corpus is not None:
        from attnscope.app.corpus import CorpusBrowser

        corpus = CorpusBrowser(corpus)
    if long is not None and not isinstance(long, dict):
        from attnscope.app.long import read_long_traces

        long = read_long_traces(long)
    loaded = load_models(models, device)
    app = create_app(loaded, limits, corpus=corpus, long=long)
    _warm_up(loaded)
    if is_loopback(host):
        # Answer only requests addressed to this machine by name or number: a web page
        # elsewhere cannot reach the explorer through a DNS name that points here.
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=[
            "127.0.0.1", "localhost", "[::1]", "::1", host])
    else:
        print(f"attnscope: warning: serving on {host}, which other machines may reach; the "
              "explorer has no login. Use --host 127.0.0.1 to keep it on this machine.",
              file=sys.stderr)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)

    # Print the URL once the socket is bound (port 0 picks a free port).
    original_startup = server.startup

    async def startup(sockets=None) -> None:
        await original_startup(sockets)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
            shown = f"[{host}]" if ":" in host else host
            browsed = "" if corpus is None else f"; corpus: {corpus.path.name}"
            for name in long or {}:
                browsed += f"; long text: http://{shown}:{bound}/long/{name}"
            print(f"attnscope explorer: http://{shown}:{bound}/  "
                  f"(models: {', '.join(loaded.names)}{browsed}; Ctrl-C to stop)", flush=True)

    server.startup = startup  # type: ignore[method-assign]  # to print the bound port
    server.run()
