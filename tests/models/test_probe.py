"""Transfer probes of a (tiny) bundle's served vector, its pooled features and a teacher's layer."""

from __future__ import annotations

import numpy as np
import pytest

from models import evaluate, probe


def test_features_and_served_vector_are_probed_alike(tiny_bundle, shared_data):
    sentences = ["what is the capital of france ?", "a dog runs .", "who wrote it ?"]
    features = probe.representation(f"{tiny_bundle}:features")(sentences)
    served = probe.representation(str(tiny_bundle))(sentences)
    both = probe.representation(f"{tiny_bundle}+{tiny_bundle}:features")(sentences)
    assert features.shape[0] == served.shape[0] == 3
    assert not np.allclose(features, served)  # the features come before the projection
    np.testing.assert_allclose(both, np.hstack([served, features]))
    np.testing.assert_allclose(served, evaluate.OnnxBundle(tiny_bundle).embed(sentences))
    scores = probe.probe(f"{tiny_bundle}:features", shared_data, ("TREC",))
    assert set(scores) == {"TREC"}
    assert 100 / 6 < scores["TREC"] <= 100  # six classes: a trained probe beats the floor


def test_unknown_representations_are_refused(tiny_bundle):
    with pytest.raises(ValueError, match="unknown teacher"):
        probe.representation("teacher:bert-base")
    with pytest.raises(ValueError, match="layers 0 to 6"):
        probe.representation("teacher:all-MiniLM-L6-v2/9")
    with pytest.raises(ValueError, match="no 'pooled' output"):
        evaluate.OnnxBundle(tiny_bundle).embed(["a dog runs ."], output="pooled")


def test_a_teacher_layer_is_its_mean_pooled_hidden_states():
    try:
        embed = probe.representation("teacher:all-MiniLM-L6-v2/layer4")
        sentences = ["A man is playing a guitar.", "Where is the station?"]
        vectors = embed(sentences)
    except (FileNotFoundError, ModuleNotFoundError) as error:
        pytest.skip(f"teacher packages not installed ({error}); run make install-train")
    from models.teacher import MiniLML6Layer4Teacher

    np.testing.assert_allclose(vectors, MiniLML6Layer4Teacher().embed(sentences), atol=1e-5)
