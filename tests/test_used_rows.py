"""UsedRowsEmbedding: training only the rows a split uses computes what the full table computes."""

from __future__ import annotations

import copy

import torch
from torch import nn

from conftest import fake_batch
from tiny_features import TINY_MODEL as TINY
from m3sa.config import config_from_dict
from m3sa.models import build_model
from m3sa.models.used_rows import UsedRowsEmbedding, fit_row_moments, restrict_word_embeddings
from m3sa.training import Runtime, Trainer

DIMS = {"acoustic": 74, "visual": 47}
ALL = ("language", "acoustic", "visual")


def test_forward_gradient_and_state_dict_equal_a_full_embedding():
    torch.manual_seed(0)
    full = nn.Embedding(20, 4, padding_idx=0)
    used = torch.tensor([7, 3, 3, 0, 12, 5])  # repeats and the padding id: 3, 5, 7, 12 are trained
    part = UsedRowsEmbedding(full.weight.detach().clone(), used, padding_idx=0)
    assert part.used.tolist() == [3, 5, 7, 12] and part.rows.shape == (4, 4)
    ids = torch.tensor([[3, 7, 0, 9], [12, 12, 5, 0]])  # 9: a row that is not trained
    out_full, out_part = full(ids), part(ids)
    assert torch.equal(out_full, out_part)
    weights = torch.randn(out_full.shape)
    (out_full * weights).sum().backward()
    (out_part * weights).sum().backward()
    assert torch.equal(part.rows.grad, full.weight.grad[part.used])
    assert not full.weight.grad[[0, 1, 2, 4, 6, 8, 10, 11, 13]].any()  # rows absent from the ids: no gradient
    # 9 is looked up but not trained (a token of another split): its row reads the constant table
    with torch.no_grad():
        part.rows.add_(1.0)
        full.weight[part.used] += 1.0
    state = part.state_dict()
    assert list(state) == ["weight"] and torch.equal(state["weight"], full.weight)
    other = UsedRowsEmbedding(torch.zeros(20, 4), used, padding_idx=0)
    other.load_state_dict(full.state_dict())
    assert torch.equal(other(ids), full(ids)) and torch.equal(other.rows, full.weight[other.used])


def _trainer(restrict: bool, seed: int = 0) -> Trainer:
    cfg = config_from_dict({"model": {**TINY, "dropout": 0.1},
                            "train": {"seeds": [0], "device": "cpu", "num_threads": 1, "grad_clip": 1.0}})
    torch.manual_seed(seed)
    net = build_model(cfg.model, DIMS, ALL)
    if restrict:
        batches = [fake_batch(batch_size=4, seed=s) for s in range(3)]
        assert restrict_word_embeddings(net, torch.cat([b["input_ids"].reshape(-1) for b in batches])) > 0
    return Trainer(cfg, net, Runtime(torch.device("cpu")))


def _run(trainer: Trainer) -> None:
    for s in range(3):
        torch.manual_seed(100 + s)
        trainer.step(fake_batch(batch_size=4, seed=s))


def test_training_steps_are_bit_identical_to_the_full_table():
    full, part = _trainer(False), _trainer(True)
    _run(full)
    _run(part)
    a, b = full.core.state_dict(), part.core.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    n_full = sum(p.numel() for p in full.all_params)
    n_part = sum(p.numel() for p in part.all_params)
    assert n_part < n_full - 30_000 * 32  # most of the 30,522 x 32 word table is not a parameter


def _position(trainer: Trainer, param: nn.Parameter) -> int:
    return next(i for i, p in enumerate(p for g in trainer.opt_all.param_groups for p in g["params"]) if p is param)


def test_a_full_tables_optimizer_state_is_fitted_exactly():
    """An optimizer state written with the whole table (an older last.pt) resumes exactly."""
    full, part = _trainer(False), _trainer(True)
    _run(full)
    _run(part)  # the same steps: the same weights and moments (test above)
    own = part.opt_all.state_dict()["state"]
    # a copy, as read from last.pt (load_state_dict adopts tensors that need no cast, so the two
    # optimizers would otherwise share their moments)
    part.load_optimizer_state(copy.deepcopy(full.optimizer_state()))
    fitted = part.opt_all.state_dict()["state"]
    for index, entry in own.items():
        for key, value in entry.items():
            assert torch.equal(fitted[index][key], value), (index, key)
    emb = next(m for m in part.core.modules() if isinstance(m, UsedRowsEmbedding))
    whole = full.opt_all.state_dict()["state"][_position(full, full.core.encoders["language"].bert.embeddings.word_embeddings.weight)]
    assert whole["exp_avg_sq"].count_nonzero() == fitted[_position(part, emb.rows)]["exp_avg_sq"].count_nonzero()
    batch = fake_batch(batch_size=4, seed=1)  # ids the restricted model trains
    torch.manual_seed(5)
    full.step(batch)
    torch.manual_seed(5)
    part.step(batch)
    for key, value in full.core.state_dict().items():
        assert torch.equal(value, part.core.state_dict()[key]), key
    unchanged = {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": []}
    assert fit_row_moments(unchanged, [], part.core) == unchanged
