"""Checkpoints: atomic writes, round trip, refusal of files that are not ours."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import types

import pytest
import torch

from m3sa.atomic import atomic_write
from m3sa.checkpoint import (FORMAT, checkpoint_config, load_checkpoint, load_model, make_checkpoint, save_checkpoint,
                             write_json)
from m3sa.config import Config, ModelConfig, config_from_dict
from m3sa.errors import CheckpointError, OutputError
from m3sa.models import build_model

DIMS = {"acoustic": 5, "visual": 4}
MODS = ("language", "acoustic", "visual")


def tiny_cfg() -> Config:
    return config_from_dict({"model": {"text_encoder": "random:tiny", "dim": 16, "transformer_heads": 2,
                                       "head_hidden": 16, "filter_hidden": 8, "dropout": 0.0}})


def make(cfg: Config, model: torch.nn.Module, **extra) -> dict:
    return make_checkpoint(model_state=model.state_dict(), epoch=3, seed=7, best_valid=0.25, cfg=cfg, dims=DIMS,
                           modalities=MODS, standardization={"acoustic": {"mean": [0.0] * 5, "std": [1.0] * 5}},
                           **extra)


@pytest.fixture(scope="module")
def model_and_cfg():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    return build_model(cfg.model, DIMS, MODS), cfg


def test_round_trip_rebuilds_the_same_model(tmp_path, model_and_cfg, make_batch):
    model, cfg = model_and_cfg
    path = tmp_path / "seed_7" / "best.pt"
    save_checkpoint(path, make(cfg, model))
    raw = torch.load(path, weights_only=True)  # plain data only: loadable without running code
    assert raw["format"] == FORMAT and raw["version"] == 1
    ckpt = load_checkpoint(path)
    assert {"model_state", "epoch", "seed", "best_valid", "config", "dims", "modalities", "standardization"} <= set(ckpt)
    assert (ckpt["epoch"], ckpt["seed"], ckpt["best_valid"]) == (3, 7, 0.25)
    assert ckpt["dims"] == DIMS and ckpt["modalities"] == list(MODS)
    assert ckpt["standardization"]["acoustic"]["std"] == [1.0] * 5
    assert checkpoint_config(ckpt) == cfg
    rebuilt, _, cfg2 = load_model(path)
    assert cfg2.model == cfg.model and not rebuilt.training
    batch = make_batch(batch_size=3, dims=DIMS, seed=1)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch).pred, rebuilt(batch).pred)
    assert list(tmp_path.glob("seed_7/.*")) == []  # no temporary file left


def test_checkpoint_of_an_earlier_version_with_flat_baseline_keys_still_loads(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    ckpt = make(cfg, model)
    flat = ckpt["config"]["model"]
    flat["tfn_hidden"], flat["mag_layer"], flat["mag_beta"] = flat.pop("tfn")["hidden"], 0, 1.0
    flat["lmf_rank"], flat["mult_layers"] = flat.pop("lmf")["rank"], flat.pop("mult")["layers"]
    del flat["mag"]
    save_checkpoint(tmp_path / "best.pt", ckpt)
    assert checkpoint_config(load_checkpoint(tmp_path / "best.pt")) == cfg


def test_extra_training_state_survives(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(__import__("conftest").fake_batch(2, dims=DIMS)).pred.sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "last.pt", make(cfg, model, optimizer_state={"multimodal": opt.state_dict()},
                                                train_state={"epoch": 3, "history": [{"valid": {"mae": 1.0}}]}))
    ckpt = load_checkpoint(tmp_path / "last.pt")
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(ckpt["optimizer_state"]["multimodal"])
    assert opt2.state_dict()["state"][0]["step"] == 1
    assert ckpt["train_state"]["history"][0]["valid"]["mae"] == 1.0


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


class Foreign:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("kind", ["plain_dict", "pickle_code", "text", "wrong_version", "truncated"])
def test_refuses_files_that_are_not_ours(tmp_path, kind, model_and_cfg):
    path = tmp_path / "x.pt"
    if kind == "plain_dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
        match = "not an m3sa checkpoint"
    elif kind == "pickle_code":
        with open(path, "wb") as fh:
            pickle.dump(Foreign(), fh)
        match = "not a checkpoint written by m3sa"
    elif kind == "text":
        path.write_text("hello")
        match = "not a checkpoint written by m3sa"
    elif kind == "wrong_version":
        model, cfg = model_and_cfg
        torch.save({**make(cfg, model), "version": 99}, path)
        match = "version 99 is not supported"
    else:
        model, cfg = model_and_cfg
        save_checkpoint(path, make(cfg, model))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        match = "not a checkpoint written by m3sa, or corrupt"
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_weights_that_do_not_fit_are_refused(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    ckpt = make(cfg, model)
    ckpt["dims"] = {"acoustic": 6, "visual": 4}  # weights were built for 5-d acoustic features
    save_checkpoint(tmp_path / "b.pt", ckpt)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(tmp_path / "b.pt")


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


@pytest.mark.parametrize("free, reason", [(0, "No space left on device"), (2**40, "torch.save failed: .*unexpected pos")])
def test_a_checkpoint_write_that_fails_is_one_output_error(tmp_path, model_and_cfg, monkeypatch, free, reason):
    """A full disk makes torch's zip writer raise RuntimeError ("unexpected pos"), not OSError:
    it must still become the project's one-line OutputError, leaving the previous file whole."""
    model, cfg = model_and_cfg
    path = tmp_path / "last.pt"
    save_checkpoint(path, make(cfg, model))
    before = path.read_bytes()

    def full_disk(obj, fh):
        fh.write(b"PK\x03\x04 half a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: types.SimpleNamespace(free=free))
    with pytest.raises(OutputError, match=rf"last\.pt: cannot write \({reason}"):
        save_checkpoint(path, make(cfg, model))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_written_files_keep_the_mode_and_stay_writable_by_their_owner(tmp_path):
    new = atomic_write(tmp_path / "new.bin", lambda fh: fh.write(b"x"))
    assert new.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    shared = tmp_path / "shared.bin"
    shared.write_bytes(b"old")
    shared.chmod(0o664)
    atomic_write(shared, lambda fh: fh.write(b"new"))
    assert shared.stat().st_mode & 0o777 == 0o664
    cached = tmp_path / "cached.bin"  # e.g. a read-only link into DVC's cache
    cached.write_bytes(b"old")
    cached.chmod(0o444)
    atomic_write(cached, lambda fh: fh.write(b"new"))
    assert cached.read_bytes() == b"new" and cached.stat().st_mode & 0o777 == 0o644


def test_unwritable_target_is_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write"):
        write_json(blocker / "sub" / "x.json", {})


def test_write_json_is_strict(tmp_path):
    write_json(tmp_path / "m.json", {"a": math.nan, "b": (1, 2.5), "c": torch.tensor(3.0), "d": math.inf})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1, 2.5], "c": 3.0, "d": None}


def test_make_checkpoint_stores_cpu_tensors_and_plain_config():
    cfg = Config(model=ModelConfig(text_encoder="random:tiny"))
    ckpt = make_checkpoint(model_state={"w": torch.ones(2, requires_grad=True)}, epoch=1, seed=0, best_valid=None,
                           cfg=cfg, dims={}, modalities=["language"], standardization=None)
    assert not ckpt["model_state"]["w"].requires_grad and ckpt["config"]["model"]["text_encoder"] == "random:tiny"
    assert ckpt["standardization"] == {} and ckpt["best_valid"] is None
