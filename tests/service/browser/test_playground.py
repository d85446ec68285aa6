"""The playground in headless Chromium with no network: its heatmap, bars, tokens and model card
show what the public API answers; with keys on it takes the key; the API's errors are shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.service.browser.chromium import Tab
from tests.service.browser.conftest import (
    BEARER,
    MAX_INPUT_CHARS,
    assert_clean,
    type_key,
)
from tests.service.conftest import ServiceProcess

SENTENCES = [
    "A man is playing a guitar.",
    "A man plays the guitar.",
    "A child is riding a horse.",
    "The dog is sleeping in the park.",
]
PREMISE, HYPOTHESIS = "A man is playing a guitar.", "A man plays music."
CELLS = """[...document.querySelectorAll('#heatmap .cell')].map((cell) => [
  Number(cell.dataset.row), Number(cell.dataset.column), cell.textContent, cell.dataset.value,
])"""
BARS = """Object.fromEntries([...document.querySelectorAll('#nli-bars .bar-row')].map((row) => [
  row.dataset.name, row.querySelector('.bar-value').textContent,
]))"""


def text_of(tab: Tab, element_id: str) -> str:
    """The text an element of the page shows."""
    return str(tab.evaluate(f"document.getElementById({element_id!r}).textContent"))


def set_value(tab: Tab, element_id: str, value: str) -> None:
    """Type `value` into a field of the page."""
    tab.evaluate(f"document.getElementById({element_id!r}).value = {json.dumps(value)}")


def run(tab: Tab, button: str) -> str:
    """Click a form's button; how the action ended (its form's `data-state`: done or failed)."""
    state = f"document.getElementById({button!r}).form.dataset.state"
    tab.evaluate(f"{state} = ''; document.getElementById({button!r}).click()")
    return str(tab.wait_for(f"['done', 'failed'].includes({state}) && {state}"))


def api(service: ServiceProcess, route: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    """The API's own answer, as a client gets it."""
    return httpx.post(f"{service.url}/{route}", json=body, headers=headers, timeout=30)


def check_model_card(tab: Tab, service: ServiceProcess, headers: dict[str, str]) -> None:
    info = httpx.get(f"{service.url}/info", headers=headers, timeout=10).json()
    tab.wait_for(f"document.getElementById('model-name').textContent === {info['model_id']!r}")
    assert text_of(tab, "model-version") == info["model_version"]
    assert text_of(tab, "model-dim") == str(info["dim"])
    assert text_of(tab, "model-provider") == info["provider"]


def check_heatmap(tab: Tab, service: ServiceProcess, headers: dict[str, str]) -> None:
    """Similarity of 4 sentences: each cell is /similarity's value, shown to 2 decimals."""
    set_value(tab, "sentences", "\n".join(SENTENCES))
    assert run(tab, "compare") == "done"
    cells = tab.evaluate(CELLS)
    assert len(cells) == len(SENTENCES) ** 2
    for i, source in enumerate(SENTENCES):
        body = {"inputs": {"source_sentence": source, "sentences": SENTENCES}}
        row = api(service, "similarity", body, headers).json()
        shown = {column: (text, float(value)) for r, column, text, value in cells if r == i}
        for j, score in enumerate(row):
            assert shown[j] == (f"{score:.2f}", score), (i, j)
    tokens = api(service, "tokenize", {"inputs": SENTENCES}, headers).json()
    counts = tab.evaluate(
        "[...document.querySelectorAll('#tokens .count')].map(c => c.textContent)"
    )
    assert counts == [f"{len(t)} tokens" for t in tokens]
    embedded = api(service, "embed", {"inputs": SENTENCES}, headers)
    assert f"embedded {embedded.headers['x-embedded-tokens']} tokens in " in text_of(
        tab, "embedded"
    )


def check_pair(tab: Tab, service: ServiceProcess, headers: dict[str, str]) -> None:
    """A pair: the NLI label and bars are /nli's, the verdict /paraphrase's."""
    set_value(tab, "premise", PREMISE)
    set_value(tab, "hypothesis", HYPOTHESIS)
    assert run(tab, "judge") == "done"
    nli = api(service, "nli", {"pairs": [{"premise": PREMISE, "hypothesis": HYPOTHESIS}]}, headers)
    answer = nli.json()[0]
    assert text_of(tab, "nli-label") == answer["label"]
    assert tab.evaluate(BARS) == {name: f"{p:.3f}" for name, p in answer["scores"].items()}
    chosen = tab.evaluate("document.querySelector('#nli-bars .chosen').dataset.name")
    assert chosen == answer["label"]
    paraphrase = api(service, "paraphrase", {"pairs": [[PREMISE, HYPOTHESIS]]}, headers).json()[0]
    verdict = "paraphrase" if paraphrase["paraphrase"] else "not a paraphrase"
    assert text_of(tab, "paraphrase-verdict") == verdict


def logged_calls(tab: Tab) -> list[list[str]]:
    """The rows of the page's table of calls: call, status, time."""
    return list(
        tab.evaluate(
            "[...document.querySelectorAll('#call-log tr')]"
            ".map((row) => [...row.cells].map((cell) => cell.textContent))"
        )
    )


def test_playground_shows_what_the_api_answers(
    tab: Tab, open_service: ServiceProcess, screenshots: Path
) -> None:
    tab.open(f"{open_service.url}/playground")
    check_model_card(tab, open_service, {})
    check_heatmap(tab, open_service, {})
    check_pair(tab, open_service, {})
    calls = logged_calls(tab)
    assert [c[:2] for c in calls].count(["POST /similarity", "200"]) == len(SENTENCES)
    assert {"GET /info", "POST /tokenize", "POST /embed", "POST /nli"} <= {c[0] for c in calls}
    assert all(c[2].endswith(" ms") for c in calls)
    assert tab.evaluate("document.getElementById('error').hidden") is True
    assert_clean(tab, open_service)
    tab.screenshot(screenshots / "playground.png")


def test_playground_takes_the_key_and_shows_the_api_errors(
    tab: Tab, keyed_service: ServiceProcess
) -> None:
    tab.open(f"{keyed_service.url}/playground")
    tab.wait_for("!document.getElementById('error').hidden")
    assert text_of(tab, "error") == (
        "GET /info: 401 unauthorized: type the service's API key in the bar above"
    )
    type_key(tab)
    check_model_card(tab, keyed_service, BEARER)
    assert tab.evaluate("document.getElementById('error').hidden") is True
    check_pair(tab, keyed_service, BEARER)
    long = " ".join(["a man"] * MAX_INPUT_CHARS)
    set_value(tab, "sentences", f"a dog\n{long}")
    assert run(tab, "compare") == "failed"
    body = {"inputs": {"source_sentence": "a dog", "sentences": ["a dog", long]}}
    refused = api(keyed_service, "similarity", body, BEARER)
    assert refused.status_code == 413
    assert text_of(tab, "error") == f"POST /similarity: 413 {refused.json()['error']}"
    assert_clean(tab, keyed_service)
