"""Every reader on the real shared data (skipped when the data folder is absent)."""

from __future__ import annotations

import itertools

import pytest

from models import corpus, data


@pytest.mark.parametrize(
    ("reader", "args", "count"),
    [
        (data.read_snli, ("dev",), 9842),
        (data.read_snli, ("test",), 9824),
        (data.read_stsb, ("train",), 5749),
        (data.read_stsb, ("dev",), 1500),
        (data.read_sts12, (), 1977),
        (data.read_mrpc, (), 4076),
        (data.read_rte, (), 4167),
        (data.read_sick, ("train",), 4500),
        (data.read_sick, ("trial",), 500),
    ],
)
def test_pair_readers_read_every_row(shared_data, reader, args, count):
    rows = reader(shared_data, *args)
    assert len(rows) == count
    assert all(row.a and row.b for row in rows)


def test_labels_are_in_range(shared_data):
    assert {p.label for p in data.read_snli(shared_data, "dev")} == {0, 1, 2}
    assert {p.label for p in data.read_mrpc(shared_data)} == {0, 1}
    assert all(0 <= p.label <= 5 for p in data.read_stsb(shared_data, "train"))
    assert all(1 <= p.relatedness <= 5 for p in data.read_sick(shared_data, "train"))


def test_ppdb_pairs(shared_data):
    pairs = data.read_ppdb(shared_data)
    assert len(pairs) > 100_000
    assert all(len(p) == 2 for p in pairs[:1000])


@pytest.mark.parametrize("task", data.TRANSFER_TASKS)
def test_transfer_sets(shared_data, task):
    split = data.read_transfer(shared_data, task)
    assert len(split.train) > 3000
    labels = {y for _, y in split.train}
    assert len(labels) >= 2
    assert min(labels) == 0


def test_unlabeled_text_is_sentences(shared_data):
    sample = list(itertools.islice(data.read_unlabeled(shared_data), 5000))
    assert len(sample) == 5000
    assert all(s.strip() == s and s for _, s in sample)


def test_training_corpus_leaves_out_evaluation_sentences(shared_data):
    held = corpus.evaluation_sentences(shared_data)
    sentences = corpus.training_sentences(shared_data, max_unlabeled=2000, seed=0)
    assert held
    assert not held & set(sentences)
    assert len(sentences) == len(set(sentences))


def test_mrpc_dev_is_a_fixed_fifth_out_of_all_training(shared_data):
    train, dev = data.mrpc_split(shared_data)
    assert len(dev) == round(0.2 * len(data.read_mrpc(shared_data)))
    assert len(train) + len(dev) == len(data.read_mrpc(shared_data))
    assert data.mrpc_split(shared_data)[1] == dev  # the same pairs every time
    assert not set(dev) & set(train)
    dev_sentences = {s for p in dev for s in (p.a, p.b)}
    assert dev_sentences <= corpus.evaluation_sentences(shared_data)


def test_passages_are_runs_of_consecutive_corpus_sentences(shared_data):
    text = corpus.training_corpus(shared_data, max_unlabeled=3000, seed=0)
    assert text.passages
    assert all(2 <= len(p) <= corpus.BLOCK_SENTENCES for p in text.passages)
    stream = [sentence for _, sentence in data.read_unlabeled(shared_data)]
    starts: dict[str, list[int]] = {}
    for position, sentence in enumerate(stream):
        starts.setdefault(sentence, []).append(position)
    for passage in text.passages[:50]:
        sentences = [text.sentences[i] for i in passage]
        assert any(stream[p : p + len(sentences)] == sentences for p in starts[sentences[0]]), (
            sentences
        )
