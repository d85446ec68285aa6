"""Arrivals: whether more work is coming, from the gaps between requests and their overlap."""

from __future__ import annotations

from service.traffic import Arrivals

MAX_WAIT_S = 0.002


def arrivals(gap_s: float, in_flight: int, count: int = 50) -> Arrivals:
    seen = Arrivals(MAX_WAIT_S)
    for k in range(count):
        seen.note(1.0 + k * gap_s, in_flight)
    return seen


def test_one_client_after_another_is_not_waited_for() -> None:
    assert not arrivals(gap_s=0.0005, in_flight=0).more_are_coming()


def test_frequent_overlapping_requests_are_waited_for() -> None:
    assert arrivals(gap_s=0.0005, in_flight=3).more_are_coming()


def test_overlapping_but_sparse_requests_are_not_waited_for() -> None:
    assert not arrivals(gap_s=0.01, in_flight=3).more_are_coming()


def test_a_burst_after_a_quiet_spell_is_waited_for_once_the_spell_is_forgotten() -> None:
    seen = arrivals(gap_s=1.0, in_flight=0, count=5)
    waited = []
    for k in range(40):  # a 5 s silence, then requests 0.2 ms apart, overlapping
        seen.note(10.0 + k * 0.0002, in_flight=1)
        waited.append(seen.more_are_coming())
    assert not waited[0]
    assert waited.index(True) < 30  # the moving averages forget the silence
    assert all(waited[waited.index(True) :])
