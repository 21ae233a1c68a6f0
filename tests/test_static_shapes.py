"""Bucketed padding (train.padding=buckets): a few static batch shapes, the same values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m3sa.config import config_from_dict
from m3sa.data.dataset import BucketBatchSampler, bucket_length, load_split, load_tokenizer, read_meta
from m3sa.models import build_model
from m3sa.runtime import uses_buckets
from m3sa.training import Runtime, Trainer
from tiny_features import DIMS, TINY_MODEL as TINY, write_features

MODS = ("language", "acoustic", "visual")


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> object:
    features = write_features(tmp_path_factory.mktemp("shapes") / "features", sizes=(96, 16, 16))
    meta = read_meta(features)
    return load_split(features, "train", load_tokenizer(TINY["text_encoder"]), 64, meta)


def test_bucket_lengths_hand_values():
    assert [bucket_length(n) for n in (0, 1, 8, 9, 12, 13, 17, 25, 33, 49, 65, 97, 129)] == [
        8, 8, 8, 12, 12, 16, 24, 32, 48, 64, 96, 128, 192]
    for n in range(1, 3000):  # never short, never more than 50 % padding above the minimum
        assert n <= bucket_length(n) and (bucket_length(n) <= 1.5 * n or bucket_length(n) == 8)


def test_auto_padding_is_buckets_on_cuda_only():
    assert uses_buckets("auto", torch.device("cuda")) and not uses_buckets("auto", torch.device("cpu"))
    assert uses_buckets("buckets", torch.device("cpu")) and not uses_buckets("batch", torch.device("cuda"))


def test_an_epoch_of_bucketed_batches_has_few_static_shapes(split):
    batches = BucketBatchSampler(split.lengths, 16, seed=0).global_batches()
    shapes = {"batch": set(), "buckets": set()}
    for idx in batches:
        for mode in shapes:
            b = split.collate(idx, buckets=mode == "buckets")
            shapes[mode].add(tuple(tuple(b[k].shape) for k in ("input_ids", "acoustic", "visual")))
    assert len(shapes["buckets"]) <= len(shapes["batch"])
    for shape in shapes["buckets"]:
        assert all(dim[1] == bucket_length(dim[1]) for dim in shape)  # every length is a bucket's
    ladder = {bucket_length(n) for n in range(1, 200)}
    assert {s[0][1] for s in shapes["buckets"]} <= ladder


@pytest.mark.parametrize("model", [{}, {"filter": "hard"}, {"name": "late_fusion"}, {"fusion": "tensor"}])
def test_bucketed_batches_give_the_same_predictions_and_updates(split, model):
    """Padded steps are masked everywhere (attention, convolutions, last valid step): the
    bucketed batch gives the batch-padded one's predictions and, from the same weights, the
    same training update, up to float rounding (no dropout: the masks' shapes differ, so with
    dropout the two draw other masks)."""
    cfg = config_from_dict({"model": {**TINY, **model, "dropout": 0.0},
                            "train": {"seeds": [0], "device": "cpu", "num_threads": 1}})
    idx = BucketBatchSampler(split.lengths, 16, seed=0).global_batches()[0]
    batches = {mode: split.collate(idx, buckets=mode == "buckets") for mode in ("batch", "buckets")}
    assert batches["buckets"]["input_ids"].shape[1] > batches["batch"]["input_ids"].shape[1] or \
        batches["buckets"]["acoustic"].shape[1] > batches["batch"]["acoustic"].shape[1]
    trained = {}
    for mode, batch in batches.items():
        torch.manual_seed(0)
        net = build_model(cfg.model, DIMS, MODS)
        for module in net.modules():  # the text encoder's own dropout too: its masks' shapes differ
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            if hasattr(module, "dropout_prob"):
                module.dropout_prob = 0.0
        net.eval()
        with torch.no_grad():
            out = net(batch)
        trained[mode] = out.pred
        torch.manual_seed(1)
        trainer = Trainer(cfg, net, Runtime(torch.device("cpu")))
        stats = trainer.step(batch)
        trained[mode + "_loss"] = stats.values
        trained[mode + "_weights"] = torch.cat([p.detach().flatten() for p in net.parameters()])
    torch.testing.assert_close(trained["buckets"], trained["batch"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trained["buckets_loss"], trained["batch_loss"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trained["buckets_weights"], trained["batch_weights"], rtol=1e-4, atol=1e-5)
