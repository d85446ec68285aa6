"""Task construction: labeled tasks never train on an STS-B dev sentence."""

from __future__ import annotations

from models import corpus, data
from models.tasks import TaskData, build_tasks, without_sentences
from models.vocabulary import train_tokenizer


def test_without_sentences_drops_pairs_touching_held_sentences():
    pairs = [("a", "b", 1.0), ("c", "d", 0.0), ("e", "a", 0.5)]
    assert without_sentences(pairs, {"a"}) == [("c", "d", 0.0)]


def test_labeled_tasks_leave_out_stsb_dev_pairs(shared_data):
    held = corpus.stsb_dev_sentences(shared_data)
    train = [*data.read_stsb(shared_data, "train"), *data.read_sts12(shared_data)]
    touching = sum(p.a in held or p.b in held for p in train)
    sick = data.read_sick(shared_data, "train")
    assert touching > 600  # STS 2012 train holds hundreds of STS-B dev's pairs
    sentences = [p.a for p in train[:500]]
    d = TaskData(shared_data, train_tokenizer(sentences, 2000), 32, sentences, None)
    tasks = build_tasks({"sts"}, d, 32, 32)
    assert len(tasks["sts"].lengths) == len(train) - touching + len(sick)


def test_passage_examples_join_whole_sentences_within_the_limit():
    import numpy as np

    from models.tasks import passage_examples

    sentence_ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    targets = np.eye(4, dtype=np.float32) * 3  # unit after normalising
    ids, vectors = passage_examples(sentence_ids, targets, [[0, 1, 2, 3]] * 20, 9, seed=0)
    assert ids
    assert all(len(row) <= 9 for row in ids)
    for row, vector in zip(ids, vectors, strict=True):
        used = [i for i, sentence in enumerate(sentence_ids) if set(sentence) <= set(row)]
        assert row == [t for i in used for t in sentence_ids[i]]
        np.testing.assert_allclose(vector, np.eye(4)[used].mean(0) / np.sqrt(1 / len(used)))
