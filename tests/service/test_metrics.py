"""The metrics registry and the request-counting middleware."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry

from service.metrics import Metrics

pytestmark = pytest.mark.anyio


def test_each_app_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.inputs.inc(3)
    assert second.inputs._value.get() == 0
    assert isinstance(first.registry, CollectorRegistry)


def test_observe_batch() -> None:
    metrics = Metrics()
    metrics.observe_batch(rows=4, padded_tokens=40, real_tokens=30, seconds=0.01)
    text = metrics.render()[0].decode()
    assert "gensen_batch_rows_sum 4.0" in text
    assert "gensen_batch_tokens_sum 40.0" in text
    assert "gensen_batch_padding_ratio_sum 0.25" in text
    assert "gensen_tokens_total 30.0" in text


async def test_unknown_routes_share_one_label(client: httpx.AsyncClient) -> None:
    for path in ("/a", "/b", "/c"):
        assert (await client.get(path)).status_code == 404
    text = (await client.get("/metrics")).text
    assert 'gensen_requests_total{route="unmatched",status="404"} 3.0' in text
