"""Task construction: labeled tasks never train on an STS-B dev sentence."""

from __future__ import annotations

from models import corpus, data
from models.tasks import TaskData, build_tasks, without_sentences
from models.vocabulary import train_tokenizer


def _train(task, encoder, heads, batch, steps: int) -> None:
    """`steps` Adam steps (lr 1e-2) of `task`'s loss on one batch."""
    import torch

    optimizer = torch.optim.Adam([*encoder.parameters(), *heads.parameters()], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        task.loss(encoder, heads, batch).backward()
        optimizer.step()


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


def test_distillation_with_a_transfer_target_learns_it_through_its_own_head():
    import numpy as np
    import torch

    from models.checkpoint import build_model
    from models.config import TrainConfig
    from models.encoder import EncoderConfig
    from models.tasks import TRANSFER_HEAD, DistillationTask
    from models.teacher import TEACHER_DIM, standardised

    rng = np.random.default_rng(0)
    ids = [list(rng.integers(4, 50, size=rng.integers(3, 9))) for _ in range(64)]
    target = rng.standard_normal((64, 16)).astype(np.float32)
    # a general-purpose target the paraphrase one does not determine: a class of the first word
    classes = rng.standard_normal((4, TEACHER_DIM)).astype(np.float32) * 5 + 3
    transfer = standardised(classes[[row[0] % 4 for row in ids]])
    np.testing.assert_allclose(transfer.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(transfer.std(0), 1, atol=1e-4)
    config = TrainConfig(encoder=EncoderConfig(50, 16, 16, 1, "max", 16), transfer_weight=0.5)
    torch.manual_seed(0)
    encoder, heads = build_model(config)
    assert TRANSFER_HEAD in heads
    assert TRANSFER_HEAD not in build_model(TrainConfig(encoder=config.encoder))[1]
    plain = DistillationTask(ids, target, 64)
    task = DistillationTask(ids, target, 64, transfer=transfer, transfer_weight=0.5)
    batch = task.make_batch(np.arange(64))
    assert "transfer" not in plain.make_batch(np.arange(64))

    def transfer_error() -> float:
        with torch.no_grad():
            student = encoder(batch["ids"], batch["lengths"])
            return float(((heads[TRANSFER_HEAD](student) - batch["transfer"]) ** 2).mean())

    with torch.no_grad():
        extra = task.loss(encoder, heads, batch) - plain.loss(encoder, heads, batch)
    np.testing.assert_allclose(float(extra), 0.5 * transfer_error(), rtol=1e-4)
    before = transfer_error()
    _train(task, encoder, heads, batch, steps=60)
    assert transfer_error() < 0.5 * before


def test_successor_pairs_follow_document_order_within_passages():
    from models.tasks import successor_pairs

    ids = [[10 + i] for i in range(6)]
    a, b = successor_pairs(ids, [[0, 1, 2], [4, 5], [1, 2]])
    assert list(zip(a, b, strict=True)) == [([10], [11]), ([11], [12]), ([14], [15])]


def test_next_sentence_task_learns_which_sentence_follows_through_its_own_head():
    """Successors share a hidden topic with their sentence (the first token's class): the task
    learns to pick each sentence's own successor out of the batch; the head exists only for a
    config that trains the task."""
    import numpy as np
    import torch

    from models.checkpoint import build_model
    from models.config import Phase, TrainConfig
    from models.encoder import EncoderConfig
    from models.tasks import NEXT_HEAD, NextSentenceTask

    rng = np.random.default_rng(0)
    topics = rng.permutation(32)
    a = [[4 + t, *rng.integers(40, 60, size=3)] for t in topics]
    b = [[36 + t, *rng.integers(40, 60, size=4)] for t in topics]
    task = NextSentenceTask("next", a, b, np.zeros(32, dtype=np.float32), 32)
    phase = Phase(name="p", steps=10, weights={"distill": 0.5, NEXT_HEAD: 0.5}, lr=1e-2)
    config = TrainConfig(encoder=EncoderConfig(70, 16, 16, 1, "max", 16), phases=[phase])
    torch.manual_seed(0)
    encoder, heads = build_model(config)
    assert NEXT_HEAD in heads
    assert NEXT_HEAD not in build_model(TrainConfig(encoder=config.encoder, phases=[]))[1]
    batch = task.make_batch(np.arange(32))

    def accuracy() -> float:
        with torch.no_grad():
            u, v = task.encode_pair(encoder, batch)
            return float((heads[NEXT_HEAD](u, v).argmax(1) == torch.arange(32)).float().mean())

    before = accuracy()
    _train(task, encoder, heads, batch, steps=80)
    assert before < 0.3
    assert accuracy() > 0.9


def test_build_tasks_makes_the_next_sentence_task_from_the_passages(shared_data):
    sentences = ["a man sings .", "he plays a guitar .", "a dog runs .", "the cat sleeps ."]
    d = TaskData(shared_data, train_tokenizer(sentences, 200), 16, sentences, None)
    d.passages = [[0, 1], [2, 3]]
    task = build_tasks({"next"}, d, 8, 8)["next"]
    batch = task.make_batch([0, 1])
    assert batch["ids"].shape[0] == 4  # both pairs' sentences, then their successors
    assert task.batch_size == 4
    assert len(task.lengths) == 2


def test_a_transfer_head_on_the_features_leaves_the_projection_to_the_paraphrase_target():
    import numpy as np
    import pytest
    import torch

    from models.checkpoint import build_model
    from models.config import TrainConfig
    from models.encoder import EncoderConfig
    from models.tasks import TRANSFER_HEAD, DistillationTask

    rng = np.random.default_rng(0)
    ids = [list(rng.integers(4, 50, size=rng.integers(3, 9))) for _ in range(32)]
    target = rng.standard_normal((32, 16)).astype(np.float32)
    transfer = rng.standard_normal((32, 384)).astype(np.float32)
    config = TrainConfig(
        encoder=EncoderConfig(50, 16, 12, 1, "max", 16),
        transfer_weight=1.0,
        transfer_reads="features",
    )
    encoder, heads = build_model(config)
    assert heads[TRANSFER_HEAD].in_features == 24  # the pooled states of both directions
    batch_rows = np.arange(32)
    gradients = {}
    for weight in (0.0, 1.0):
        task = DistillationTask(
            ids, target, 32, transfer=transfer, transfer_weight=weight, transfer_reads="features"
        )
        encoder.zero_grad(), heads.zero_grad()
        task.loss(encoder, heads, task.make_batch(batch_rows)).backward()
        gradients[weight] = (
            encoder.projection.weight.grad.clone(),
            encoder.encoder.weight_hh_l0.grad.clone(),
        )
    # the transfer term does not reach the projection
    assert torch.allclose(gradients[0.0][0], gradients[1.0][0])
    assert not torch.allclose(gradients[0.0][1], gradients[1.0][1])  # but it trains the GRU
    with pytest.raises(ValueError, match="transfer_reads"):
        DistillationTask(
            ids, target, 32, transfer=transfer, transfer_weight=1.0, transfer_reads="x"
        )
