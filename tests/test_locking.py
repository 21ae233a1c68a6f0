"""Concurrency: one writer per output folder (m3sa.locking), in the library and in the stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from m3sa.errors import OutputError
from m3sa.locking import output_lock

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

HOLD = """
import sys, time
from m3sa.locking import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_in_child(folder: Path, seconds: float = 60.0) -> subprocess.Popen:
    """A separate process holding the lock of ``folder`` (returns once it holds it)."""
    proc = subprocess.Popen([PY, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_lock_is_exclusive_names_the_holder_and_leaves_nothing(tmp_path):
    out = tmp_path / "features"
    child = hold_in_child(out)
    try:
        assert (out / ".lock").read_text().startswith(f"pid {child.pid} on ")
        t0 = time.monotonic()
        with pytest.raises(OutputError) as err:
            with output_lock(out):
                pass
        assert time.monotonic() - t0 < 2  # timeout 0: no wait
        msg = str(err.value)
        assert msg.startswith(f"{out}: another run is writing here (pid {child.pid} on ") and "\n" not in msg
    finally:
        child.terminate()
        child.wait()
    with output_lock(out) as path:
        assert path == out / ".lock" and path.exists()
    assert list(out.iterdir()) == []  # released: the lock file is gone


def test_a_waiter_gets_the_lock_when_the_holder_ends(tmp_path):
    out = tmp_path / "models"
    child = hold_in_child(out, seconds=1.0)
    t0 = time.monotonic()
    with output_lock(out, timeout=30, poll=0.05):
        waited = time.monotonic() - t0
    child.wait()
    assert 0.5 < waited < 30  # it waited for the holder's second, then got the lock


def test_sigkill_of_the_holder_frees_the_lock(tmp_path):
    out = tmp_path / "features"
    child = hold_in_child(out)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert (out / ".lock").exists()  # stale file left by the killed holder ...
    with output_lock(out):  # ... does not block the next run
        pass
    assert not (out / ".lock").exists()


def test_threads_take_turns_and_never_overlap(tmp_path):
    """Many contenders, each waiting: at most one inside at any time (also across the
    remove-on-release race, where a waiter may lock a file that was just removed)."""
    out = tmp_path / "o"
    inside, peak, done = [0], [0], []
    guard = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            with output_lock(out, timeout=60, poll=0.001):
                with guard:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                time.sleep(0.002)
                with guard:
                    inside[0] -= 1
        done.append(1)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 6 and peak[0] == 1


def test_unwritable_place_is_a_clear_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"file/sub: cannot create the output folder"):
        with output_lock(blocker / "sub"):
            pass


# ---------------------------------------------------------------- stages

def _workspace(tmp_path: Path) -> Path:
    """A workspace with a params.yaml for the tiny embedded sample (outputs under it)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(source="sample", sample_size="tiny", sample_dir="data/sample", features_dir="data/features")
    (ws / "params.yaml").write_text(yaml.safe_dump(raw))
    return ws


def _stage(ws: Path, name: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([PY, "-m", f"stages.{name}"], cwd=ws, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def test_extract_stage_refuses_to_run_while_another_writes_the_folder(tmp_path):
    ws = _workspace(tmp_path)
    assert _stage(ws, "sample").wait(timeout=300) == 0
    child = hold_in_child(ws / "data" / "features")  # stands for a running extraction
    try:
        proc = _stage(ws, "extract")
        _, err = proc.communicate(timeout=300)
    finally:
        child.send_signal(signal.SIGINT)  # a clean end: the holder removes its lock file
        child.wait()
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: extract: data/features: another run is writing here (pid ")
    assert sorted(p.name for p in (ws / "data" / "features").iterdir()) == []  # nothing written
    assert _stage(ws, "extract").wait(timeout=300) == 0  # holder gone: runs
    assert sorted(p.name for p in (ws / "data" / "features").iterdir()) == [
        "meta.json", "test.parquet", "train.parquet", "valid.parquet"]


@pytest.mark.slow
def test_two_extractions_started_together_do_not_corrupt_the_outputs(tmp_path):
    """Two real runs at once: one may be refused (exit 2, one line), never a mixed or broken set."""
    ws = _workspace(tmp_path)
    assert _stage(ws, "sample").wait(timeout=300) == 0
    procs = [_stage(ws, "extract") for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    for code, err in results:
        if code == 2:
            assert "another run is writing here" in err and len(err.strip().splitlines()) == 1
    out = ws / "data" / "features"
    meta = json.loads((out / "meta.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.parquet", "train.parquet", "valid.parquet"]
    for split, n in meta["counts"].items():
        assert pq.read_table(out / f"{split}.parquet").num_rows == n


@pytest.mark.parametrize("stage, folder", [("train", "models"), ("evaluate", "metrics")])
def test_train_and_evaluate_stages_refuse_while_their_folder_is_locked(tmp_path, stage, folder):
    """The lock is taken before any work, so a second run stops at once and touches nothing."""
    ws = _workspace(tmp_path)
    child = hold_in_child(ws / folder)
    try:
        proc = _stage(ws, stage)
        _, err = proc.communicate(timeout=300)
    finally:
        child.send_signal(signal.SIGINT)
        child.wait()
    assert proc.returncode == 2, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert lines == [err.strip().splitlines()[-1]]
    assert lines[0].startswith(f"error: {stage}: {folder}: another run is writing here (pid {child.pid} on ")
    assert sorted(p.name for p in ws.iterdir()) == sorted(["params.yaml", folder])
