"""A training step never reads from the device: no host synchronisation inside a step.

On CUDA, reading a tensor's value on the host (``.item()``, ``.tolist()``, ``.cpu()``,
``bool(t)`` in an ``if``, ``float(t)``, ...) makes the CPU wait until the GPU has run every
kernel queued so far, so the next step's kernels cannot be queued meanwhile. These tests count
every such read during training steps on the CPU (the same Python code runs on CUDA).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Iterator

import pytest
import torch

from conftest import fake_batch
from tiny_features import TINY_MODEL as TINY
import m3sa.models.encoders as encoders
from m3sa.config import config_from_dict
from m3sa.models import build_model
from m3sa.models.used_rows import restrict_word_embeddings
from m3sa.training import Runtime, Trainer
from m3sa.training.step import LossTally, NonFiniteLoss

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def count_reads() -> Iterator[Counter]:
    """Count host reads of tensor values (methods of torch.Tensor listed in READS)."""
    counts: Counter = Counter()
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, fn):
        def counted(self, *args, **kwargs):
            counts[name] += 1
            return fn(self, *args, **kwargs)
        return counted

    for name, fn in saved.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def trainer_for(model: dict, **train) -> Trainer:
    cfg = config_from_dict({"model": {**TINY, **model},
                            "train": {"seeds": [0], "device": "cpu", "num_threads": 1, "grad_clip": 1.0, **train}})
    torch.manual_seed(0)
    net = build_model(cfg.model, {"acoustic": 74, "visual": 47}, ("language", "acoustic", "visual"))
    restrict_word_embeddings(net, torch.arange(0, 30522, 2))  # as training does (half the rows trained)
    return Trainer(cfg, net, Runtime(torch.device("cpu")))


@pytest.mark.parametrize("model", [{}, {"filter": "hard"}, {"recipe": "paper"}, {"name": "late_fusion"},
                                   {"filter": "none", "fusion": "graph"}])
def test_no_host_read_inside_a_training_step(model, monkeypatch):
    # the code path taken on CUDA, where a host read waits for the device (on the CPU the text
    # encoder builds its mask from the 2-D one, whose host test costs nothing there)
    monkeypatch.setattr(encoders, "host_reads_sync", lambda device: True)
    trainer = trainer_for(model)
    batches = [fake_batch(batch_size=4, seed=s) for s in range(3)]
    trainer.step(batches[0])  # first call: lazy initialisation (optimizer state) is not a step's cost
    tally = LossTally()
    with count_reads() as reads:
        for i, batch in enumerate(batches, start=1):
            tally.add(trainer.step(batch), 4, i)
    assert dict(reads) == {}, f"host reads inside {len(batches)} steps: {dict(reads)}"
    means = tally.means()  # the one read, after the steps
    assert set(means) >= {"loss", "loss_multimodal"} and all(v == v for v in means.values())


def test_tally_names_the_first_nonfinite_batch_and_phase():
    tally = LossTally()
    from m3sa.training.step import StepStats

    def stats(uni: float, multi: float) -> StepStats:
        return StepStats.join([StepStats(("loss_unimodal",), torch.tensor([uni]), (("unimodal", 0),)),
                               StepStats(("loss", "loss_multimodal"), torch.tensor([multi, multi]),
                                         (("multimodal", 0),))])

    tally.add(stats(1.0, 2.0), 4, 1)
    tally.add(stats(1.0, 4.0), 2, 2)
    tally.check()  # all finite: nothing raised
    assert tally.means() == pytest.approx({"loss_unimodal": 1.0, "loss": 8 / 3, "loss_multimodal": 8 / 3})
    tally.add(stats(1.0, float("inf")), 4, 3)
    tally.add(stats(float("nan"), 1.0), 4, 4)  # later, and another phase: the first one is kept
    with pytest.raises(NonFiniteLoss) as err:
        tally.check()
    assert (err.value.batch, err.value.what, err.value.value) == (3, "multimodal", float("inf"))


@pytest.mark.parametrize("lengths", [[3, 5, 2, 6], [6, 6, 6, 6]])  # padded, and a batch without padding
def test_ready_made_encoder_mask_gives_the_same_hidden_states(lengths):
    """The 4-D mask handed to the text encoder computes what its own 2-D handling does."""
    from m3sa.models.encoders import encoder_mask
    from m3sa.models.text import load_encoder

    torch.manual_seed(0)
    bert = load_encoder("random:tiny").eval()
    batch = fake_batch(batch_size=4, lengths=lengths)
    mask = batch["attention_mask"].bool()
    ready_made = mask[:, None, None, :].expand(-1, 1, mask.shape[1], -1)  # what encoder_mask gives on CUDA
    assert torch.equal(encoder_mask(bert, mask), mask.long())  # the CPU: the encoder's own handling
    with torch.no_grad():
        ours = bert(input_ids=batch["input_ids"], attention_mask=ready_made).last_hidden_state
        theirs = bert(input_ids=batch["input_ids"], attention_mask=mask.long()).last_hidden_state
    valid = mask.unsqueeze(-1).expand_as(ours)
    torch.testing.assert_close(ours[valid], theirs[valid], rtol=0, atol=1e-6)
