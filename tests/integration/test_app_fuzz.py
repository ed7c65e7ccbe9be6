"""Fuzzing the explorer's JSON API from its own OpenAPI schema (schemathesis).

Every route gets generated requests, valid and invalid (wrong types, missing fields, odd
Unicode, huge numbers), sent in-process to the ASGI app serving a tiny BERT model and
browsing a corpus store of that model (so the corpus routes are fuzzed too). No answer may be
a server error, and every answer must match the schema: its status is documented, its body
has the documented shape. At least 500 requests are sent in all.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

import attnscope as at  # noqa: E402
from attnscope.app import Limits, create_app  # noqa: E402
from attnscope.testing import build_tiny_model  # noqa: E402

#: Generated requests per route, valid and invalid; seven routes make well over 500.
EXAMPLES = 45
#: Generated requests per corpus route (valid only: they take query parameters, no body).
CORPUS_EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    """The app on a tiny BERT (fast) with a corpus store of it, counting the requests it
    answers."""
    model = at.load(build_tiny_model("bert", tmp_path_factory.mktemp("fuzz-model")),
                    device="cpu")
    store = tmp_path_factory.mktemp("fuzz-corpus") / "stats.duckdb"
    at.corpus(model, ["It rained, so it was wet.", "Birds sing.", "The cat sat on the mat."],
              out=store, progress=False, run="fuzz")
    app = create_app([model], Limits(max_chars=300, max_tokens=64, cache=256), corpus=store)
    sent: list[str] = []

    async def counting(scope, receive, send):
        if scope["type"] == "http" and scope["path"] != "/openapi.json":
            sent.append(scope["path"])
        await app(scope, receive, send)

    counting.openapi = app.openapi
    counting.sent = sent
    return counting


def test_api_conforms_to_its_schema(fuzz_app):
    from hypothesis import given
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/models", "/api/capture", "/api/heads",
                                              "/api/explain", "/api/flow", "/api/compare",
                                              "/api/page", "/api/corpus", "/api/corpus/heads",
                                              "/api/corpus/stat", "/api/corpus/layers",
                                              "/api/corpus/relations", "/api/corpus/examples",
                                              "/api/corpus/search"}
    failures = []
    for operation in operations:
        corpus_route = operation.path.startswith("/api/corpus")
        examples = CORPUS_EXAMPLES if corpus_route else EXAMPLES
        # (a route with no parameters and no body cannot be sent invalid data)
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.body else [])
        for mode in modes:

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                # Every check but one: a request the schema allows may still be refused with
                # a sentence (an empty text, a layer past the model's, too many tokens).
                response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
                assert response.status_code < 500
                if response.status_code >= 400:
                    body = response.json()
                    assert set(body) == {"error"} and body["error"].endswith(".")

            try:
                run()
            except Exception as err:  # collect every route's problem, then fail once
                failures.append(f"{operation.label} {mode.value}: {err}")
    assert failures == []
    print(f"{len(fuzz_app.sent)} requests")
    assert len(fuzz_app.sent) >= 500
