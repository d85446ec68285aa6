"""A tiny end-to-end training run on real pairs: the loss falls, runs are deterministic and resume."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from models.checkpoint import build_model, load_weights, save_checkpoint
from models.config import Phase, TrainConfig
from models.data import read_stsb
from models.encoder import EncoderConfig
from models.tasks import TaskData, build_tasks
from models.train import TaskSampler, learning_rate, train
from models.vocabulary import train_tokenizer


def _config(tmp_path, steps: int) -> TrainConfig:
    return TrainConfig(
        name="tiny",
        max_unlabeled=0,
        vocab_size=3000,
        glove_init=False,
        encoder=EncoderConfig(3000, 32, 32, 1, "max", 32),
        head_hidden=32,
        sentence_batch=32,
        pair_batch=32,
        phases=[
            Phase(
                "multitask", steps, {"sts": 0.5, "nli": 0.5}, lr=3e-3, lr_final=1e-3, warmup_steps=5
            )
        ],
        threads=1,
        eval_every=10**9,
        checkpoint_every=20,
        run_dir=str(tmp_path / "run"),
    )


def _loss_on(tasks, encoder, heads, name: str, rows: int = 300) -> float:
    task = tasks[name]
    encoder.eval(), heads.eval()
    with torch.no_grad():
        return task.loss(encoder, heads, task.make_batch(np.arange(rows))).item()


def test_training_on_a_few_hundred_pairs_lowers_the_loss(tmp_path, shared_data):
    config = _config(tmp_path, steps=80)
    sentences = [p.a for p in read_stsb(shared_data, "train")]
    d = TaskData(shared_data, train_tokenizer(sentences, 3000), 32, sentences, None)
    config.encoder.vocab_size = d.tokenizer.get_vocab_size()
    tasks = build_tasks({"sts"}, d, 32, 32)
    # keep it to a few hundred pairs
    tasks["sts"].lengths = tasks["sts"].lengths[:320]
    encoder, heads = build_model(config)
    before = _loss_on(tasks, encoder, heads, "sts")
    optimizer = torch.optim.Adam([*encoder.parameters(), *heads.parameters()], lr=3e-3)
    sampler = TaskSampler(
        dataclasses.replace(config, phases=[Phase("sts", 80, {"sts": 1.0})]), tasks
    )
    for step in range(80):
        _, rows = sampler.draw(step)
        encoder.train()
        loss = tasks["sts"].loss(encoder, heads, tasks["sts"].make_batch(rows))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _loss_on(tasks, encoder, heads, "sts")
    assert after < 0.7 * before, (before, after)


@pytest.mark.slow
def test_full_loop_is_deterministic_and_resumes(tmp_path, shared_data):
    first = train(_config(tmp_path / "a", 40), shared_data).encoder
    config = _config(tmp_path / "b", 40)
    train(config, shared_data, stop_after=20)  # stop half-way, then resume from the checkpoint
    resumed = train(config, shared_data).encoder
    for (name, a), b in zip(first.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_learning_rate_warms_up_then_decays():
    phase = Phase("p", 100, {"sts": 1.0}, lr=1.0, lr_final=0.1, warmup_steps=10)
    rates = [learning_rate(phase, s) for s in range(100)]
    assert rates[0] == pytest.approx(0.1)
    assert rates[9] == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(0.1, abs=0.01)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))


def test_config_round_trips_through_a_dict(tmp_path):
    config = _config(tmp_path, 10)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_a_new_run_starts_from_another_runs_weights(tmp_path, shared_data):
    donor = train(_config(tmp_path / "donor", 20), shared_data)
    config = dataclasses.replace(_config(tmp_path / "fine", 1), seed=1)
    tuned = train(config, shared_data, init_from=tmp_path / "donor" / "run" / "checkpoint.pt")
    moved = [
        (a - b).abs().max().item()
        for a, b in zip(
            donor.encoder.state_dict().values(), tuned.encoder.state_dict().values(), strict=True
        )
    ]
    assert 0 < max(moved) < 0.05  # one small step from the donor's weights, not a fresh start


def test_weights_load_into_a_reshaped_config_keeping_what_fits(tmp_path):
    config = _config(tmp_path, 1)
    encoder, heads = build_model(config)
    save_checkpoint(
        tmp_path / "donor.pt",
        1,
        encoder,
        heads,
        torch.optim.Adam(encoder.parameters()),
        config,
        0.0,
    )
    reshaped = dataclasses.replace(config, head_hidden=16, seed=1)
    new_encoder, new_heads = build_model(reshaped)
    fresh = load_weights(tmp_path / "donor.pt", new_encoder, new_heads)
    assert fresh == sorted(new_heads)  # every head changed shape, so each stays as built
    assert load_weights(tmp_path / "donor.pt", *build_model(config)) == []  # all fit
    for a, b in zip(encoder.parameters(), new_encoder.parameters(), strict=True):
        assert torch.equal(a, b)
