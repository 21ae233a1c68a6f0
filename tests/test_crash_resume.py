"""Crash and resume: stages killed with SIGKILL part-way, then run again.

Training killed in the middle of an epoch resumes from its last checkpoint and, with a
fixed seed on CPU, ends exactly where an uninterrupted run ends (same weights, same
metrics, same curves). An extraction killed part-way leaves no file under a final name
that is partial or from a different run, and the rerun completes with the same bytes an
uninterrupted extraction writes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from e2e import TINY_PARAMS, set_params
from m3sa.data.sample import generate_sample
from tiny_features import write_features

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4
TRAIN_PARAMS = {**TINY_PARAMS, "data.features_dir": "features", "train.device": "cpu", "train.num_threads": 1,
                "train.epochs": EPOCHS, "train.batch_size": 8, "train.patience": 10, "model.transformer_heads": 2}
#: metrics/train.json keys that measure time, not what was computed
TIMING = {"wall_s", "train_s", "samples_per_s", "data_wait_share", "resumed_from_epoch"}


def env() -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    out.pop("M3SA_DEBUG", None)
    return out


def start(ws: Path, stage: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"stages.{stage}", *args], cwd=ws, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(ws: Path, stage: str, *args: str) -> str:
    proc = start(ws, stage, *args)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{stage} failed:\n{err[-3000:]}"
    return err


def kill_when(proc: subprocess.Popen, appeared: Path, delay: float, timeout: float = 300) -> float:
    """SIGKILL the process group of ``proc`` ``delay`` s after ``appeared`` exists; seconds waited."""
    t0 = time.monotonic()
    while not appeared.exists():
        assert proc.poll() is None, f"ended before {appeared} appeared:\n{proc.stderr.read()[-3000:]}"  # type: ignore[union-attr]
        assert time.monotonic() - t0 < timeout
        time.sleep(0.002)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return time.monotonic() - t0


def train_workspace(path: Path, features: Path) -> Path:
    path.mkdir()
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    set_params(path / "params.yaml", TRAIN_PARAMS)
    shutil.copytree(features, path / "features")
    return path


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model_state"]


def curve(ws: Path, name: str = "valid/mae") -> list[tuple[str, str]]:
    rows = (ws / "dvclive" / "seed_0" / "plots" / "metrics" / f"{name}.tsv").read_text().split("\n")[1:]
    return [tuple(r.split("\t")[:2]) for r in rows if r]  # (step, value); the timestamp column differs


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
    features = write_features(tmp_path / "features", sizes=(400, 48, 48))
    straight = train_workspace(tmp_path / "straight", features)
    crashed = train_workspace(tmp_path / "crashed", features)
    last = crashed / "models" / "seed_0" / "last.pt"

    proc = start(crashed, "train")
    kill_when(proc, last, delay=0.8)  # epoch 1 is saved; epoch 2 is under way
    assert proc.returncode == -signal.SIGKILL
    done = torch.load(last, weights_only=True)["epoch"]
    assert 1 <= done < EPOCHS  # killed part-way
    assert not (crashed / "metrics" / "train.json").exists()
    assert {p.name for p in last.parent.iterdir() if not p.name.startswith(".")} <= {"best.pt", "last.pt"}
    torch.load(last.parent / "best.pt", weights_only=True)  # whole: written atomically

    log = finish(crashed, "train")
    assert f"resuming from models/seed_0/last.pt after epoch {done}" in log
    finish(straight, "train")

    a = json.loads((straight / "metrics" / "train.json").read_text())
    b = json.loads((crashed / "metrics" / "train.json").read_text())
    assert b["per_seed"][0]["resumed_from_epoch"] == done
    for row in (a, b):
        row.pop("mean")
        for seed in row["per_seed"]:
            for key in TIMING:
                seed.pop(key, None)
    assert a == b
    wa, wb = weights(straight / "models" / "seed_0" / "best.pt"), weights(crashed / "models" / "seed_0" / "best.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for ws in (straight, crashed):  # finished: the resume state is gone
        assert sorted(p.name for p in (ws / "models" / "seed_0").iterdir() if not p.name.startswith(".")) == [
            "best.pt", "state.json"]
    histories = [json.loads((ws / "models/seed_0/state.json").read_text())["train_state"]["history"]
                 for ws in (straight, crashed)]
    assert [h["valid"] for h in histories[0]] == [h["valid"] for h in histories[1]]
    assert curve(straight) == curve(crashed)  # no step lost or repeated
    assert [s for s, _ in curve(crashed)] == [str(i) for i in range(EPOCHS)]
    assert not (crashed / "models" / ".lock").exists()

    finish(straight, "evaluate")
    finish(crashed, "evaluate")
    for name in ("test.json", "valid.json", "masks.json", "robustness.json"):
        assert (straight / "metrics" / name).read_bytes() == (crashed / "metrics" / name).read_bytes(), name


# ---------------------------------------------------------------- extraction

def extract_workspace(path: Path, sample: Path, **params) -> Path:
    path.mkdir()
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    set_params(path / "params.yaml", {"data.source": "sample", "data.sample_dir": str(sample),
                                      "data.features_dir": "features", **params})
    return path


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "tiny"
    generate_sample(out, "tiny", seed=0, progress=False)
    return out


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.2])
def test_extraction_killed_part_way_leaves_no_partial_parquet_and_reruns(sample, tmp_path, delay):
    reference = extract_workspace(tmp_path / "ref", sample)
    finish(reference, "extract")
    want = outputs(reference / "features")
    assert sorted(want) == ["meta.json", "test.parquet", "train.parquet", "valid.parquet"]

    ws = extract_workspace(tmp_path / "ws", sample)
    proc = start(ws, "extract")
    kill_when(proc, ws / "features" / ".lock", delay=delay)  # the lock appears as the run starts writing
    got = outputs(ws / "features")
    final = {n: b for n, b in got.items() if not n.startswith(".")}
    if proc.returncode == -signal.SIGKILL and "meta.json" not in final:
        assert not final, f"partial outputs under final names: {sorted(final)}"
    else:  # the run had finished before the kill
        assert final == want
    finish(ws, "extract")
    assert outputs(ws / "features") == want  # temp files and the stale lock are gone


def test_extraction_killed_while_replacing_an_earlier_run_never_mixes_the_two(sample, tmp_path):
    """An earlier, different extraction is in place; a kill at any moment leaves it whole,
    or no meta.json (an incomplete set says so), never a set that mixes both runs."""
    old_ws = extract_workspace(tmp_path / "old", sample, **{"data.max_words": 4})
    finish(old_ws, "extract")
    new_ws = extract_workspace(tmp_path / "new", sample)
    finish(new_ws, "extract")
    old, new = outputs(old_ws / "features"), outputs(new_ws / "features")
    assert old["train.parquet"] != new["train.parquet"]
    for delay in (0.0, 0.1, 0.3):
        ws = extract_workspace(tmp_path / f"ws{delay}", sample)
        shutil.copytree(old_ws / "features", ws / "features")
        proc = start(ws, "extract")
        kill_when(proc, ws / "features" / ".lock", delay=delay)
        final = {n: b for n, b in outputs(ws / "features").items() if not n.startswith(".")}
        if "meta.json" in final:
            assert final in (old, new), "meta.json next to Parquet files of another run"
        finish(ws, "extract")
        assert outputs(ws / "features") == new


def test_damaged_curves_are_rewritten_from_the_checkpoint_on_resume(tmp_path, monkeypatch):
    """A run that died while dvclive wrote (empty metrics.json, a half line in a .tsv) resumes,
    and its curves end as an uninterrupted run's: rebuilt from last.pt's history."""
    from m3sa.config import config_from_dict
    from m3sa.training import train

    def cfg(epochs: int):
        return config_from_dict({"model": {"text_encoder": "random:tiny", "dim": 16, "transformer_heads": 2,
                                           "max_tokens": 24},
                                 "train": {"seeds": [0], "epochs": epochs, "batch_size": 16, "patience": 9, "schedule": "constant",
                                           "device": "cpu", "num_threads": 1}})

    features = write_features(tmp_path / "features", sizes=(48, 16, 16))
    straight, broken = tmp_path / "a", tmp_path / "b"
    train(cfg(3), features, straight / "models", straight / "dvclive", 0)
    import m3sa.training.loop as loop

    real = loop._run_epoch

    def stop_after_two(*args):
        if args[5] > 2:  # the epoch: stopped (as by Ctrl-C) once two epochs are saved
            raise KeyboardInterrupt
        return real(*args)

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(loop, "_run_epoch", stop_after_two)
        train(cfg(3), features, broken / "models", broken / "dvclive", 0)
    seed_dir = broken / "dvclive" / "seed_0"
    (seed_dir / "metrics.json").write_text("")
    with open(seed_dir / "plots" / "metrics" / "valid" / "mae.tsv", "a") as fh:
        fh.write("2\t0.12")  # a row cut short
    result = train(cfg(3), features, broken / "models", broken / "dvclive", 0)
    assert result["resumed_from_epoch"] == 2
    assert curve(straight) == curve(broken) and [s for s, _ in curve(broken)] == ["0", "1", "2"]
    assert json.loads((seed_dir / "metrics.json").read_text())["step"] == 2
