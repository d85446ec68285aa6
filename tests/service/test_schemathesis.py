"""Schemathesis against /openapi.json of a real `python -m service` on loopback: data generated
from the document (valid and invalid) on every route; no 5xx, every answer's status, content
type, headers and body as documented, valid data taken and invalid data refused."""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from tests.service.conftest import ServiceProcess, report_figure

pytestmark = pytest.mark.slow
EXAMPLES = int(
    os.environ.get("GENSEN_FUZZ_EXAMPLES", "50")
)  # per route and mode: bounded, so that the run takes seconds
OPERATIONS = [
    "POST /",
    "POST /embed",
    "POST /similarity",
    "POST /paraphrase",
    "POST /nli",
    "POST /tokenize",
    "POST /decode",
    "POST /v1/embeddings",
    "GET /v1/models",
    "GET /health",
    "GET /ready",
    "GET /info",
    "GET /metrics",
]
# 413 is a refusal the document cannot foresee for valid data (an input past the model's token
# limit with truncate false) and the right refusal of invalid data (a text past maxLength).
CONFIG = {
    "checks": {
        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx"]},
        "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "413", "429"]},
        "negative_data_rejection": {"expected-statuses": ["400", "404", "405", "413", "422"]},
    }
}
CASES: dict[str, int] = {}


@pytest.fixture(scope="module")
def api_schema(served: ServiceProcess) -> schemathesis.BaseSchema:
    document = httpx.get(f"{served.url}/openapi.json").json()
    return schemathesis.openapi.from_dict(document, config=SchemathesisConfig.from_dict(CONFIG))


def test_the_document_lists_exactly_these_operations(api_schema: schemathesis.BaseSchema) -> None:
    labels = sorted(result.ok().label for result in api_schema.get_all_operations())
    assert labels == sorted(OPERATIONS)


# every route with valid data; the routes with a body with invalid data as well
RUNS = [
    (label, mode)
    for label in OPERATIONS
    for mode in GenerationMode
    if label.startswith("POST") or mode is GenerationMode.POSITIVE
]


@pytest.mark.parametrize(("label", "mode"), RUNS, ids=[f"{op} {mode.value}" for op, mode in RUNS])
def test_generated_requests(
    api_schema: schemathesis.BaseSchema, served: ServiceProcess, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        CASES[label] = CASES.get(label, 0) + 1
        case.call_and_validate(base_url=served.url, timeout=30)

    check()


def test_the_service_still_serves(served: ServiceProcess) -> None:
    assert httpx.get(f"{served.url}/ready").status_code == 200
    report_figure("schemathesis cases sent", f"{sum(CASES.values())} over {len(CASES)} routes")
