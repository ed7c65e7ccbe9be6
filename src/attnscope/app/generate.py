"""The explorer's Generate tab: ``POST /api/generate`` streams the answer's tokens as they come,
then the generation view's payload (drawn by the same view script as every page).

The answer is newline-delimited JSON: ``{"token": "..."}`` for each generated token's text,
then one last line, ``{"done": true, "view": {...}, "stopped": "...", "note": ...}`` (the
generation view's payload: :func:`attnscope.render.generation_view.generation_payload`) or
``{"error": "one sentence"}``. The explorer's limits hold: the prompt's characters and tokens,
at most :data:`MAX_NEW_TOKENS` new tokens, one run of a model at a time within the gate's
runs and queue, and the time limit: past it the answer stops where it is and is kept (the note
says so). A visitor who leaves stops the generation at the next token.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from attnscope.app.runtime import Busy, TooLarge, check_chars
from attnscope.app.schemas import ERRORS_OF_HTML
from attnscope.errors import AttnscopeError

__all__ = ["MAX_NEW_TOKENS", "GenerateRequest", "generate_routes", "is_generative"]

#: The most tokens one request may generate.
MAX_NEW_TOKENS = 256


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, max_length=1000, description="a generative model served "
                                                                 "here (default: the first)")
    # Lengths are the explorer's limits (--max-chars, the body cap), checked with one sentence,
    # as on every route: a bound in the schema would promise an answer the body cap overrules.
    prompt: str = Field(description="the prompt (the user's message with chat)")
    system: str | None = Field(None, description="a system prompt (implies chat)")
    chat: bool = Field(True, description="send the prompt through the chat template")
    max_new_tokens: int = Field(48, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0: the most likely token")
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


def is_generative(model: Any) -> bool:
    """Whether a loaded model can generate (a decoder-only model with its LM head)."""
    return getattr(model, "lm_model", None) is not None and model.architecture == "decoder"


def _line(item: dict[str, Any]) -> bytes:
    return (json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            + "\n").encode("utf-8")


def generate_routes(app: FastAPI, state: Any) -> None:
    """Add ``POST /api/generate`` to the explorer ``app`` (``state``: its models, limits and
    gate)."""

    @app.post("/api/generate", summary="Generate an answer, streamed, then its view",
              response_class=StreamingResponse, responses={
                  200: {"description": "newline-delimited JSON: the tokens, then the view",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
                  **ERRORS_OF_HTML})
    async def generate_route(body: GenerateRequest) -> StreamingResponse:
        """Newline-delimited JSON: each generated token's text as it comes, then the
        generation view's payload (see the module's documentation)."""
        name = body.model if body.model is not None else _first_generative(state)
        model = state.models.get(name)
        if not is_generative(model):
            raise AttnscopeError(
                f"{name} cannot generate: the Generate tab needs a decoder-only model with its "
                "language-modelling head (GPT-2, Llama, SmolLM2...), as in attnscope serve "
                "--model smollm2.")
        check_chars(body.prompt, "prompt", state.limits.max_chars)
        if body.system is not None:
            check_chars(body.system, "system prompt", state.limits.max_chars)
        if not body.prompt.strip():
            raise AttnscopeError("The prompt is empty: type what the model should answer.")
        count = len(model.tokenizer((body.system or "") + body.prompt)["input_ids"])
        if count > state.limits.max_tokens:
            raise TooLarge(f"The prompt has {count} tokens; this explorer takes at most "
                           f"{state.limits.max_tokens} (start it with a larger --max-tokens).")
        if state.gate.admitted >= state.gate.capacity:
            raise Busy("The explorer is busy; try again in a moment.")
        return StreamingResponse(_stream(state, name, model, body),
                                 media_type="application/x-ndjson")


def _first_generative(state: Any) -> str:
    for name in state.models.names:
        if is_generative(state.models.get(name)):
            return name
    raise AttnscopeError("None of this explorer's models can generate: start it with a "
                         "generative model, as in attnscope serve --model smollm2.")


async def _stream(state: Any, name: str, model: Any, body: GenerateRequest):
    from attnscope.generation import generate
    from attnscope.render.generation_view import generation_view

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()  # the visitor left
    # generation stops (keeping its answer) a little before the gate's own time limit
    budget = max(1.0, 0.8 * state.limits.timeout_s)
    timing: dict[str, float] = {}

    def on_token(piece: str) -> None:
        if gone.is_set() or time.monotonic() - timing["start"] > budget:
            raise KeyboardInterrupt  # generate keeps what it has and says "interrupted"
        loop.call_soon_threadsafe(queue.put_nowait, {"token": piece})

    def work() -> dict[str, Any]:
        with state.models.lock(name):
            timing["start"] = time.monotonic()
            trace = generate(model, body.prompt, max_new_tokens=body.max_new_tokens,
                             temperature=body.temperature, seed=body.seed,
                             system=body.system or None,
                             chat=bool(body.chat or body.system), on_token=on_token,
                             progress=False)
        stopped = (trace.generation or {}).get("stopped")
        note = None
        if stopped == "interrupted":
            note = (f"Stopped at the explorer's time limit ({budget:g} s); the answer so far "
                    "is kept. Start it with a larger --timeout for longer answers.")
        view = generation_view(trace, model=model)
        return {"done": True, "stopped": stopped, "note": note, "view": view.payload()}

    task = asyncio.ensure_future(state.gate.run(work))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield _line(getter.result())
                continue
            getter.cancel()
            while not queue.empty():
                yield _line(queue.get_nowait())
            try:
                yield _line(task.result())
            except (AttnscopeError, Busy) as err:
                yield _line({"error": str(err)})
            return
    finally:
        gone.set()
