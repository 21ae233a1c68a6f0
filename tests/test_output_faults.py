"""Read-only and full output folders, for every stage that writes files.

Each stage runs (in this process, through ``stages._cli.run``, as ``python -m stages.<name>``
would) in a copy of a finished tiny workspace whose output folder was made read-only, or
filled up (a real, full tmpfs where this test may mount one; a zero file-size limit in a
child process otherwise, which fails every write the way a full disk does). Expected: exit
2, one line on stderr naming the stage and the path, and nothing half-written: every file
is either as it was or complete, and no temporary file is left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
import pytest
import torch

import stages._cli as cli
from e2e import TINY_PARAMS, set_params
from test_compare import PAYLOAD

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {**TINY_PARAMS, "data.source": "sample", "train.device": "cpu", "train.num_threads": 1,
          "model.transformer_heads": 2, "model.head_hidden": 16, "model.filter_hidden": 8}

# stage -> (arguments, the folder whose fault is tried, folders emptied first so that the stage must write)
STAGES: dict[str, tuple[list[str], str, list[str]]] = {
    "sample": ([], "data", []),
    "extract": ([], "data/features", []),
    "train": ([], "models", ["models", "dvclive"]),
    "evaluate": ([], "metrics", []),
    "report": ([], "reports", []),
    "predict": (["--checkpoint", "models/seed_0/best.pt", "--input", "data/features/test.parquet",
                 "--output", "out/pred.parquet"], "out", []),
    "plots": (["--vega-template", "out/template.html", "--vega-js", "js/a.js", "js/b.js", "js/c.js"], "out", []),
    "collect": (["--json", "exp.json"], "results", []),
    "compare": (["--json", "exp.json", "-o", "out/table.md"], "out", []),
}
SLOW = {"train", "report", "sample"}


def run_stage(ws: Path, name: str, argv: list[str]) -> int:
    """``python -m stages.<name> argv`` in ``ws``, in this process; the exit code."""
    import importlib

    mod = importlib.import_module(f"stages.{name}")
    old = Path.cwd()
    os.chdir(ws)
    try:
        if name == "compare":
            mod.main(argv)
        else:
            extra = getattr(mod, "_extra", None) or getattr(mod, "add_arguments", None)
            cli.run(name, mod.main, argv=argv, extra=extra)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        os.chdir(old)
    return 0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A workspace where every stage has run once (tiny sample, one seed, two epochs)."""
    ws = tmp_path_factory.mktemp("ws")
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    set_params(ws / "params.yaml", PARAMS)
    (ws / "exp.json").write_text(json.dumps(PAYLOAD))
    (ws / "js").mkdir()
    for name in ("a", "b", "c"):
        (ws / "js" / f"{name}.js").write_text(f"var {name} = 1;\n")
    threads = torch.get_num_threads()
    try:
        for name in STAGES:
            assert run_stage(ws, name, STAGES[name][0]) == 0, name
    finally:
        torch.set_num_threads(threads)
    return ws


def snapshot(ws: Path) -> dict[str, bytes]:
    return {str(p.relative_to(ws)): p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file()}


def complete(path: Path) -> bool:
    """Whether a file of a known kind is whole (parses to its end)."""
    data = path.read_bytes()
    suffix = path.suffix
    if suffix == ".json":
        json.loads(data)
    elif suffix == ".parquet":
        pq.read_table(path)
    elif suffix == ".pt":
        torch.load(path, weights_only=True)
    elif suffix == ".csd":
        from m3sa.data.csd import read_csd

        read_csd(path)
    elif suffix == ".png":
        return data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82")
    elif suffix == ".html":
        return data.rstrip().endswith(b"</html>")
    elif suffix in (".md", ".csv", ".tsv", ".yaml"):
        return data.endswith(b"\n")
    return True


def check_consistent(ws: Path, before: dict[str, bytes], name: str, target: str, stderr: str, code: int) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2, (name, code, stderr[-2000:])
    assert "Traceback" not in stderr and len(errors) == 1, stderr[-2000:]
    assert errors[0].startswith(f"error: {name}: ") and stderr.rstrip().endswith(errors[0]), stderr[-2000:]
    assert target in errors[0], errors[0]  # names the path
    after = snapshot(ws)
    leftovers = [f for f in after if Path(f).name.startswith(".") and f not in before and Path(f).name != ".filler"]
    assert not leftovers, f"temporary files left: {leftovers}"
    for rel, data in after.items():
        if before.get(rel) != data and Path(rel).name != ".filler":
            assert complete(ws / rel), f"{rel} is half-written"


def copy_workspace(workspace: Path, dest: Path, name: str) -> Path:
    shutil.copytree(workspace, dest, symlinks=True)
    for rel in STAGES[name][2]:
        shutil.rmtree(dest / rel, ignore_errors=True)
        (dest / rel).mkdir(parents=True)
    (dest / STAGES[name][1]).mkdir(parents=True, exist_ok=True)
    return dest


# ---------------------------------------------------------------- ways to break a folder

def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_bytes(b"x")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` and everything below it read-only: chmod for a normal user, a read-only
    bind mount for root (whom chmod does not stop)."""
    if os.geteuid() != 0:
        dirs = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        for d in dirs:
            d.chmod(0o555)
        try:
            yield
        finally:
            for d in dirs:
                d.chmod(0o755)
        return
    if not (_mount("--bind", str(folder), str(folder)) and _mount("-o", "remount,ro,bind", str(folder))):
        _umount(folder)
        pytest.skip("root without permission to mount: cannot make a read-only folder")
    try:
        if _writable(folder):
            pytest.skip("the read-only bind mount did not take effect")
        yield
    finally:
        _umount(folder)


@contextlib.contextmanager
def full_disk(folder: Path) -> Iterator[None]:
    """``folder`` on a small tmpfs holding its previous content, every free byte taken."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; test_file_size_limit covers the same path")
    used = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    aside = folder.with_name(folder.name + ".aside")
    folder.rename(aside)
    folder.mkdir()
    if not _mount("-t", "tmpfs", "-o", f"size={used + (256 << 10)}", "tmpfs", str(folder)):
        folder.rmdir()
        aside.rename(folder)
        pytest.skip("no permission to mount a tmpfs")
    try:
        shutil.copytree(aside, folder, dirs_exist_ok=True, symlinks=True)
        fd = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:  # take every free block, down to the last byte
            for chunk in (64 << 10, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError as err:
                    assert err.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield
    finally:
        _umount(folder)
        folder.rmdir()
        aside.rename(folder)


# ---------------------------------------------------------------- the tests

def _params(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


@pytest.mark.parametrize("name", _params(list(STAGES)))
def test_read_only_output_folder(workspace, tmp_path, capsys, name):
    ws = copy_workspace(workspace, tmp_path / "ws", name)
    argv, target, _ = STAGES[name]
    before = snapshot(ws)
    capsys.readouterr()
    with read_only(ws / target):
        code = run_stage(ws, name, argv)
        err = capsys.readouterr().err
    check_consistent(ws, before, name, target, err, code)


@pytest.mark.parametrize("name", _params(list(STAGES)))
def test_disk_full(workspace, tmp_path, capsys, name):
    ws = copy_workspace(workspace, tmp_path / "ws", name)
    argv, target, _ = STAGES[name]
    capsys.readouterr()
    with full_disk(ws / target):
        before = snapshot(ws)
        code = run_stage(ws, name, argv)
        err = capsys.readouterr().err
        check_consistent(ws, before, name, target, err, code)
        assert "No space left on device" in err


def _no_file_writes() -> None:  # in the child, before exec: every write to a file fails (EFBIG)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STAGES))
def test_file_size_limit(workspace, tmp_path, name):
    """No mount needed: a child process whose every file write fails, as on a full disk."""
    ws = copy_workspace(workspace, tmp_path / "ws", name)
    argv, target, _ = STAGES[name]
    before = snapshot(ws)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("M3SA_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", f"stages.{name}", *argv], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=600, preexec_fn=_no_file_writes)
    check_consistent(ws, before, name, "", proc.stderr, proc.returncode)
    assert "File too large" in proc.stderr


def test_read_only_curves_folder(workspace, tmp_path, capsys):
    """dvclive's folder read-only: the same one line, naming it (dvclive itself raises OSError)."""
    ws = copy_workspace(workspace, tmp_path / "ws", "train")
    before = snapshot(ws)
    capsys.readouterr()
    with read_only(ws / "dvclive"):
        code = run_stage(ws, "train", [])
        err = capsys.readouterr().err
    check_consistent(ws, before, "train", "dvclive/seed_0: cannot write the training curves", err, code)
