"""The bodies of the explorer's JSON API: what each route takes and gives (pydantic models,
which FastAPI turns into the OpenAPI schema at ``/openapi.json`` and the page at ``/docs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ERRORS",
    "ERRORS_OF_HTML",
    "CaptureRequest",
    "CaptureResponse",
    "CompareRequest",
    "CompareResponse",
    "CorpusExamplesResponse",
    "CorpusHeadsResponse",
    "CorpusInfo",
    "CorpusLayersResponse",
    "CorpusRelationsResponse",
    "CorpusSearchResponse",
    "CorpusStatResponse",
    "ErrorBody",
    "ExplainRequest",
    "ExplainResponse",
    "FlowRequest",
    "FlowResponse",
    "HeadsResponse",
    "LimitsInfo",
    "ModelsResponse",
    "PageRequest",
    "TextInput",
]

class TextInput(BaseModel):
    """A text (and optional second text) for one model of the allowlist."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = Field(None, description="a model name from GET /api/models "
                                                "(default: the first one)")
    text: str = Field(description="the text to look at")
    text_b: str | None = Field(None, description="a second sentence (a pair), or the decoder's "
                                                 "text for encoder-decoder models")


class CaptureRequest(TextInput):
    layer: int = Field(-1, description="layer shown first (negative counts from the end)")
    head: int | None = Field(None, description="head shown alone (default: every head)")
    query: int | None = Field(None, description="query token of the neuron view")


class ExplainRequest(TextInput):
    layer: int = Field(0, description="layer (negative counts from the end)")
    head: int = Field(0, description="head (negative counts from the end)")
    query: int = Field(0, description="position of the query token")
    part: Literal["self", "decoder", "cross"] = "self"


class FlowRequest(TextInput):
    kind: Literal["rollout", "flow"] = Field("flow", description="rollout (instant) or flow "
                                                                 "(maximum flow, in slices)")
    output: int | None = Field(None, description="output token position (default: [CLS], or "
                                                 "the last token of causal models)")
    budget_s: float | None = Field(None, gt=0, le=3600, allow_inf_nan=False,
                                   description="seconds this request may spend (at most the "
                                               "server's flow budget)")
    figure: bool = Field(True, description="add the relevance chart once complete")


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    a: TextInput
    b: TextInput
    layer: int | None = Field(None, description="layer of the head whose difference is drawn "
                                                "large (default: the head that changes most)")
    head: int | None = Field(None, description="head whose difference is drawn large (default: "
                                               "the head that changes most)")


class PageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    a: CaptureRequest
    b: TextInput | None = Field(None, description="a second input shown beside the first")


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, in one sentence")


class ModelInfo(BaseModel):
    name: str
    model_type: str
    architecture: str
    layers: int
    heads: int
    max_tokens: int | None
    generative: bool = False


class CorpusRun(BaseModel):
    run_id: str
    model: str
    source: str
    texts: int
    tokens: int
    layers: int
    heads: int
    created: str
    served: bool = Field(description="whether this explorer serves the run's model, so its "
                                     "examples open in the views and token search runs")
    relations: bool = Field(description="whether the run has syntactic relations (CoNLL-U)")


class CorpusInfo(BaseModel):
    store: str = Field(description="the store's file name")
    default_run: str = Field(description="the run shown first (the latest)")
    runs: list[CorpusRun]
    score_names: list[str]
    stats: list[str] = Field(description="every statistic GET /api/corpus/stat takes")
    example_kinds: list[str]


class LimitsInfo(BaseModel):
    """The explorer's limits (see attnscope.app.Limits): counts are whole numbers."""

    max_chars: int
    max_tokens: int
    timeout_s: float
    runs: int
    queue: int
    flow_budget_s: float
    cache: int
    cache_mb: float


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    default: str
    limits: LimitsInfo
    corpus: CorpusInfo | None = Field(None, description="the corpus store this explorer "
                                                        "browses (null: none)")


class CaptureResponse(BaseModel):
    model: str
    tokens: list[str] = Field(description="each token as the text it stands for, to show")
    raw_tokens: list[str] = Field(description="each token as the tokenizer spells it")
    num_layers: int
    num_heads: int
    layer: int
    head: int | None
    capture_ms: float
    view: dict[str, Any] = Field(description="what the view script draws: the tokens, and "
                                             "attention as compressed typed arrays in base64 "
                                             "(the payload of attnscope.AttnView)")


class HeadRow(BaseModel):
    layer: int
    head: int
    label: str
    label_score: float | None
    class_: str = Field(alias="class")
    scores: dict[str, float | None]


class HeadsResponse(BaseModel):
    model: str
    tokens: list[str]
    score_names: list[str]
    heads: list[HeadRow]


class ExplainResponse(BaseModel):
    model: str
    layer: int
    head: int
    query: int
    query_token: str
    key_tokens: list[str]
    head_dim: int
    q: list[float]
    keys: dict[str, Any] = Field(description="key vectors [T_k, d] as float16 in base64")
    dots: list[float]
    scale: float
    scores: list[float]
    bias: list[float] | None
    visible: list[bool]
    weights: list[float]
    model_weights: list[float]
    max_abs_error: float


class FlowResponse(BaseModel):
    kind: str
    model: str
    output: int
    output_token: str
    tokens: list[str]
    values: list[float | None]
    relevance: list[float] | None
    done: int
    total: int
    complete: bool
    seconds: float
    budget_s: float
    note: str | None
    figure: str | None = Field(description="the relevance chart as a PNG data URL")


class CompareSide(BaseModel):
    model: str
    text: str
    text_b: str | None
    tokens: list[str]
    view: dict[str, Any]


class Difference(BaseModel):
    comparable: bool
    reason: str | None
    layer: int | None
    head: int | None
    changes: list[list[float]] | None = Field(description="largest |B - A| per head [L][H]")
    grid: str | None = Field(description="every head's B - A as a PNG data URL")
    head_figure: str | None = Field(description="the chosen head's B - A as a PNG data URL")


class CompareResponse(BaseModel):
    a: CompareSide
    b: CompareSide
    difference: Difference


class CorpusHeadRow(BaseModel):
    layer: int
    head: int
    label: str | None = Field(description="the head's most frequent label over the texts")
    label_share: float | None = Field(description="share of texts that gave it that label")
    scores: dict[str, float | None] = Field(description="mean over texts of every "
                                                        "head-pattern score, and entropy")


class CorpusHeadsResponse(BaseModel):
    run: str
    model: str
    texts: int
    score_names: list[str]
    heads: list[CorpusHeadRow]


class CorpusStatResponse(BaseModel):
    run: str
    stat: str
    mean: list[list[float | None]] = Field(description="[L][H] mean over texts")
    std: list[list[float | None]] = Field(description="[L][H] standard deviation (ddof 0)")
    n: list[list[int]] = Field(description="[L][H] texts that gave a value")


class LayerPanel(BaseModel):
    stat: str
    title: str
    values: list[list[float | None]] = Field(description="[L][H] mean of every head")
    layer_mean: list[float | None] = Field(description="[L] mean of the layer's heads")


class CorpusLayersResponse(BaseModel):
    run: str
    model: str
    panels: list[LayerPanel]
    offsets: list[int]
    profile: list[list[list[float | None]]] = Field(
        description="[L][H][offsets] mean weight by key position - query position")
    charts: list[dict[str, Any]] = Field(description="the same numbers as the chart "
                                                     "specifications the page's charts draw")


class RelationRow(BaseModel):
    relation: str
    direction: str
    n: int
    layer: int
    head: int
    accuracy: float
    baseline_offset: int
    baseline_accuracy: float


class CorpusRelationsResponse(BaseModel):
    run: str
    relations: list[RelationRow]


class ExampleRow(BaseModel):
    value: float
    query_pos: int | None
    key_pos: int | None
    query_token: str | None
    key_token: str | None
    text_key: str
    position: int
    text: str
    text_b: str | None
    query_span: list[int] | None = Field(None, description="where the query token is: "
                                         "[0 for text or 1 for text_b, start, end] (characters), "
                                         "when the run's model is served")
    key_span: list[int] | None = Field(None, description="where the key token is, likewise")


class CorpusExamplesResponse(BaseModel):
    run: str
    model: str
    layer: int
    head: int
    kind: str
    served: bool
    examples: list[ExampleRow]


class SearchRow(BaseModel):
    layer: int
    head: int
    key_token: str
    weight: float
    occurrences: int


class CorpusSearchResponse(BaseModel):
    run: str
    token: str
    occurrences: int
    rows: list[SearchRow]


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the request cannot be read"},
    413: {"model": ErrorBody, "description": "the request body is over the explorer's size "
                                             "limit (one sentence says how many bytes it takes)"},
    422: {"model": ErrorBody, "description": "a field is missing or wrong, or a text is over "
                                             "the length limits (one sentence says which)"},
    503: {"model": ErrorBody, "description": "too many runs waiting, or a run over the time "
                                             "limit; retry after the Retry-After seconds"},
}

# The same answers for a route whose success is HTML: its errors are still JSON.
ERRORS_OF_HTML: dict[int | str, dict[str, Any]] = {
    code: {"description": spec["description"], "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}
    for code, spec in ERRORS.items()
}
