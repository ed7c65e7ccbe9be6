"""The explorer's Generate tab and its examples, in Chromium against a real ``attnscope
serve``: streamed tokens, then the generation view; examples that run at one click."""

from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.request

import pytest

from tests.browser.pages import watch
from tests.gen_trace import generation_trace

pytestmark = pytest.mark.browser

HAS_GENERATE = importlib.util.find_spec("attnscope.generation") is not None


@pytest.fixture(scope="module")
def generating_server(tiny_dirs):
    pytest.importorskip("fastapi")
    if not HAS_GENERATE:
        pytest.skip("attnscope.generate is not here")
    from attnscope.models import default_model_dir
    from tests.explorer_server import ExplorerServer

    server = ExplorerServer("--model", str(tiny_dirs["llama"]), "--model",
                            str(default_model_dir()), "--timeout", "120")
    yield server
    server.stop()


def _post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_examples_and_the_generate_tab(browser, generating_server, tiny_models):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    log = watch(page)
    page.goto(generating_server.url)
    page.wait_for_function("document.body.dataset.ready === '1'")
    # the explorer opens with examples to click, and a Generate tab for the generative model
    labels = page.eval_on_selector_all(".ex-example", "bs => bs.map(b => b.textContent)")
    assert labels == ["sentence pair", "another pair", "a pronoun to resolve",
                      "chat with a generative model"]
    assert page.is_visible(".ex-tab[data-tab='generate']")
    assert not page.is_visible("#generate")
    encoder = page.evaluate("JSON.parse(document.getElementById('explorer-config').textContent)"
                            ".models.filter(m => !m.generative)[0].name")
    page.select_option("#model", encoder)
    page.click("text=a pronoun to resolve")
    page.wait_for_selector("#views .attnscope-root[data-ready]", timeout=60_000)
    assert page.input_value("#text").startswith("The animal didn't cross the street")
    # generate: tokens stream in, then the view
    page.click(".ex-tab[data-tab='generate']")
    assert page.is_visible("#gen-prompt") and not page.is_visible("#run-form")
    page.fill("#gen-prompt", "the cat sat")
    page.uncheck("#gen-chat")
    page.fill("#gen-max", "5")
    page.click("#gen-run")
    page.wait_for_selector("#gen-view[data-ready] .attnscope-root[data-gen-step]",
                           timeout=120_000)
    expected = generation_trace(tiny_models["llama"], "the cat sat", 5)
    view = page.evaluate("document.querySelector('#gen-view .attnscope-root').attnscope"
                         ".payload.gen")
    assert view["steps"] == 5
    assert view["answer_start"] == expected.answer_start
    answer = "".join(view["text"][view["answer_start"]:])
    # (a character split over tokens streams once whole; the view marks a split end with U+FFFD)
    assert page.text_content("#gen-stream") == answer.rstrip("\ufffd")
    # the view works as on a saved page: arrows step through the answer
    page.click(f"#gen-view .as-gtok[data-index='{view['answer_start']}']")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.querySelector('#gen-view .attnscope-root').attnscope.views"
                         ".generation.state.step") == 1
    # mistakes: one sentence
    page.fill("#gen-prompt", " ")
    page.click("#gen-run")
    assert page.text_content("#gen-error") == "Type a prompt first."
    assert log.problems == [] and log.dialogs == []
    assert all(url.startswith(generating_server.url) for url in log.requests)
    page.close()


def test_generate_route_limits(generating_server):
    url = generating_server.url + "api/generate"
    with urllib.request.urlopen(generating_server.url + "api/models", timeout=30) as answer:
        models = json.loads(answer.read())["models"]
    assert [m["generative"] for m in models] == [True, False]
    status, body = _post(url, {"model": models[1]["name"], "prompt": "hello"})
    assert status == 422 and "cannot generate" in json.loads(body)["error"]
    status, body = _post(url, {"prompt": "hello", "max_new_tokens": 10_000})
    assert status in (400, 422) and "max_new_tokens" in json.loads(body)["error"]
    status, body = _post(url, {"prompt": "   "})
    assert status == 422 and json.loads(body)["error"].startswith("The prompt is empty")
    status, body = _post(url, {"prompt": "x" * 5000})
    assert status == 422 and "at most 2000" in json.loads(body)["error"]
    status, body = _post(url, {"prompt": "the cat", "chat": False, "max_new_tokens": 3})
    lines = [json.loads(line) for line in body.splitlines()]
    assert [("token" in line) for line in lines] == [True, True, True, False]
    assert lines[-1]["done"] and lines[-1]["stopped"] == "max_new_tokens"
    assert lines[-1]["view"]["gen"]["steps"] == 3
