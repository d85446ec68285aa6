"""Evaluation through ONNX Runtime on a real (tiny) bundle and the real dev data."""

from __future__ import annotations

import math

from models import evaluate


def test_dev_metrics_run_on_an_exported_bundle(tiny_bundle, shared_data):
    model = evaluate.OnnxBundle(tiny_bundle)
    scores = {
        **evaluate.stsb_dev(model, shared_data),
        **evaluate.sick_trial(model, shared_data, frozenset()),
        **evaluate.mrpc_dev(model, shared_data),
    }
    assert set(scores) == {
        "STS-B dev",
        "SICK-R trial",
        "SICK-E trial",
        "SICK-E trial ECE",
        "SICK-E trial unseen",
        "SICK-E trial unseen pairs",
        "MRPC dev acc",
        "MRPC dev F1",
        "MRPC dev ECE",
    }
    assert all(math.isfinite(v) for v in scores.values())
    assert 0 <= scores["SICK-E trial"] <= 100
    assert scores["SICK-E trial unseen"] == scores["SICK-E trial"]  # nothing seen: all unseen
    assert scores["SICK-E trial unseen pairs"] == 500
    assert 0 <= scores["MRPC dev ECE"] <= 1


def test_batched_embed_keeps_input_order(tiny_bundle):
    model = evaluate.OnnxBundle(tiny_bundle)
    sentences = ["a man is playing", "dog", "the red car is near the big old train station ."]
    together = model.embed(sentences)
    for i, sentence in enumerate(sentences):
        assert abs(model.embed([sentence])[0] - together[i]).max() < 1e-5


def test_table_lists_paper_numbers():
    table = evaluate.format_table({"STS-B dev": 80.0, "SICK-E trial": 85.0})
    assert "78.6" in table
    assert "87.8" in table
