"""Security: no pickled code runs on load, servers stay local, no credentials leak into outputs."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from m3sa.checkpoint import load_checkpoint, load_model
from m3sa.errors import CheckpointError
from tiny_features import write_features

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("m3sa", "stages", "pipelines", "scripts", "benchmarks")


# ---------------------------------------------------------------- checkpoints

class Payload:
    """Unpickling this object would create the file ``self.marker`` (a stand-in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Files that would run code when loaded without ``weights_only``."""
    out = {}
    out["torch_zip"] = folder / "torch_zip.pt"
    torch.save(Payload(marker), out["torch_zip"])  # the usual torch.save zip format
    out["legacy_pickle"] = folder / "legacy.pt"
    with open(out["legacy_pickle"], "wb") as fh:
        pickle.dump(Payload(marker), fh)
    out["inside_a_checkpoint"] = folder / "inside.pt"  # looks like ours, code hidden in a field
    torch.save({"format": "m3sa-checkpoint", "version": 1, "model_state": {}, "epoch": 1, "seed": 0,
                "best_valid": None, "config": {"x": Payload(marker)}, "dims": {}, "modalities": ["language"],
                "standardization": {}}, out["inside_a_checkpoint"])
    return out


def test_pickle_payloads_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    for kind, path in _evil_files(tmp_path, marker).items():
        for load in (load_checkpoint, load_model):
            with pytest.raises(CheckpointError) as err:
                load(path)
            msg = str(err.value)
            assert str(path) in msg and "not a checkpoint written by m3sa" in msg and "\n" not in msg, (kind, msg)
            assert not marker.exists(), f"{kind}: the pickled code ran"
    # the control: plain unpickling would have run it
    with open(tmp_path / "legacy.pt", "rb") as fh:
        pickle.load(fh)  # noqa: S301 - on purpose
    assert marker.exists()


def test_evaluate_and_predict_refuse_a_planted_checkpoint(tmp_path):
    """The stages that load checkpoints: exit 2 with one line, the payload never runs."""
    marker = tmp_path / "pwned"
    ws = tmp_path / "ws"
    (ws / "models" / "seed_0").mkdir(parents=True)
    torch.save(Payload(marker), ws / "models" / "seed_0" / "best.pt")
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    write_features(ws / "features", sizes=(8, 8, 8))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("M3SA_DEBUG", None)
    runs = {
        "evaluate": ["--set", "train.seeds=[0]", "--set", "data.features_dir=features"],
        "predict": ["--checkpoint", "models/seed_0/best.pt", "--input", "features/test.parquet", "--output", "p.csv"],
    }
    for stage, args in runs.items():
        proc = subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=ws, env=env,
                              capture_output=True, text=True, timeout=300)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert "models/seed_0/best.pt: not a checkpoint written by m3sa" in lines[0]
        assert not marker.exists()


def test_training_does_not_resume_from_a_planted_last_checkpoint(tmp_path, caplog):
    import logging

    from m3sa.config import config_from_dict
    from m3sa.training import train

    marker = tmp_path / "pwned"
    features = write_features(tmp_path / "features", sizes=(16, 8, 8))
    (tmp_path / "models" / "seed_0").mkdir(parents=True)
    torch.save(Payload(marker), tmp_path / "models" / "seed_0" / "last.pt")
    cfg = config_from_dict({"model": {"text_encoder": "random:tiny", "dim": 16, "transformer_heads": 2},
                            "train": {"seeds": [0], "epochs": 1, "device": "cpu", "num_threads": 1}})
    with caplog.at_level(logging.WARNING, logger="m3sa.training"):
        result = train(cfg, features, tmp_path / "models", tmp_path / "live", 0)
    assert result["resumed_from_epoch"] == 0 and not marker.exists()
    assert "not a checkpoint written by m3sa" in caplog.text
    load_checkpoint(tmp_path / "models" / "seed_0" / "best.pt")  # a real one; the planted file is gone
    assert not (tmp_path / "models" / "seed_0" / "last.pt").exists()


def _python_files() -> list[Path]:
    return [p for d in CODE_DIRS if (ROOT / d).exists() for p in (ROOT / d).rglob("*.py")]


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            out.append((f"{owner}.{name}" if owner else name, node))
    return out


def test_no_code_path_unpickles_untrusted_files():
    """Every torch.load passes weights_only=True; no pickle/marshal loads, eval/exec,
    yaml.load without the safe loader, np.load(allow_pickle=True) or trust_remote_code=True."""
    problems = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for name, call in _calls(tree):
            kw = {k.arg: k.value for k in call.keywords}
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if name == "torch.load":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "dill.load", "joblib.load",
                        "yaml.load", "yaml.unsafe_load") or (name in ("eval", "exec") and isinstance(call.func, ast.Name)):
                problems.append(f"{where}: {name}")
            if name == "np.load" and isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value:
                problems.append(f"{where}: np.load(allow_pickle=True)")
            trc = kw.get("trust_remote_code")
            if isinstance(trc, ast.Constant) and trc.value is True:
                problems.append(f"{where}: trust_remote_code=True")
    assert not problems, problems


# ---------------------------------------------------------------- servers stay on 127.0.0.1

def test_prefect_defaults_bind_the_local_interface():
    from pipelines.settings import default_env

    env = default_env()
    assert not any("HOST" in k for k in env), env  # host left to Prefect's default...
    code = ("from pipelines.settings import apply_defaults; apply_defaults();"
            "import prefect.settings as s; print(s.get_current_settings().server.api.host)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_API")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "127.0.0.1", out.stderr[-2000:]  # ... which is local
    told = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(ROOT), "PREFECT_SERVER_API_HOST": "10.1.2.3"})
    assert told.stdout.strip().splitlines()[-1] == "10.1.2.3"  # unless the user says otherwise


def test_no_file_binds_a_public_interface():
    """prefect.yaml, the flows, scripts, CI and docs never start a server on 0.0.0.0 / ::, and
    every ``--host`` they pass is local."""
    docs = [p for p in (ROOT / "docs").glob("*.md") if p.name != "reliability.md"]  # it describes this check
    files = [ROOT / "prefect.yaml", ROOT / "dvc.yaml", *_python_files(), *docs,
             *(p for p in (ROOT / ".ci").rglob("*") if p.is_file()), ROOT / "README.md"]
    bad = []
    for path in files:
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.search(r"0\.0\.0\.0|\[::\]|host\s*=\s*['\"]::['\"]", line):
                bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
            for host in re.findall(r"--host[ =]+(\S+)", line):
                if host.strip("'\"`") not in ("127.0.0.1", "localhost"):
                    bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, bad


def test_local_dask_cluster_binds_127_0_0_1():
    from pipelines.sweep import make_task_runner

    runner = make_task_runner("local:2")
    assert runner.cluster_kwargs["host"] == "127.0.0.1" and runner.cluster_kwargs["dashboard_address"] is None


@pytest.mark.usefixtures("prefect_api")
def test_the_temporary_prefect_server_listens_on_127_0_0_1():
    import psutil
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url.startswith("http://127.0.0.1:"), url
    port = int(url.split(":")[2].split("/")[0])
    try:
        listening = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    except psutil.AccessDenied:  # pragma: no cover - some systems hide other processes' sockets
        pytest.skip("cannot list listening sockets")
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening


# ---------------------------------------------------------------- credentials

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "planted-aws-secret-4f9a1c",
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDKEY0000001",
    "AZURE_STORAGE_KEY": "planted-azure-key-77c2",
    "GOOGLE_APPLICATION_CREDENTIALS": "/planted/gcp-credentials-31d8.json",
    "HF_TOKEN": "hf_plantedtoken5a5a5a",
    "PREFECT_API_KEY": "pnu_plantedprefectkey9b9b",
    "DVC_REMOTE_PASSWORD": "planted-dvc-password-0e0e",
}


def _grep_secrets(texts: dict[str, bytes]) -> list[str]:
    found = []
    for where, data in texts.items():
        for name, value in SECRETS.items():
            if value.encode() in data:
                found.append(f"{where}: {name}")
    return found


@pytest.mark.slow
def test_planted_secrets_never_reach_params_logs_metrics_reports_or_checkpoints(tmp_path):
    from e2e import TINY_PARAMS, set_params

    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    set_params(ws / "params.yaml", {**TINY_PARAMS, "data.source": "sample", "train.device": "cpu",
                                    "train.num_threads": 1, "model.transformer_heads": 2})
    env = {**os.environ, "PYTHONPATH": str(ROOT), **SECRETS, "M3SA_DEBUG": "1"}  # debug: the most verbose logs
    logs = {}
    for stage in ("sample", "extract", "train", "evaluate", "report"):
        proc = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=ws, env=env, capture_output=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs[f"{stage} log"] = proc.stdout + proc.stderr
    files = {str(p.relative_to(ws)): p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    for rel in [r for r in files if r.endswith(".pt")]:  # the resolved params inside checkpoints
        files[rel + " (config)"] = json.dumps(torch.load(ws / rel, weights_only=True)["config"]).encode()
    assert "reports/report.html" in files and "metrics/test.json" in files and "models/seed_0/best.pt" in files
    assert not _grep_secrets({**files, **logs})


def test_repository_holds_no_credentials():
    """Tracked files: no key material, no DVC remote credentials in .dvc/config (they belong
    in the environment or .dvc/config.local, which git ignores)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    keys = [rb"AKIA[0-9A-Z]{16}", rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", rb"hf_[A-Za-z0-9]{30,}"]
    # a credential assigned a literal value; a reference ({{ prefect.blocks... }}, $VAR, <...>) is fine
    assigned = re.compile(rb"(?i)(secret_access_key|access_key_id|password|account_key|sas_token|credentialpath)"
                          rb"\s*[=:]\s*(\S+)")
    hits = []
    for rel in filter(None, listed.stdout.split("\n")):
        path = ROOT / rel
        if not path.is_file() or rel.startswith("tests/") or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        hits += [f"{rel}: {p.decode()}" for p in keys if re.search(p, data)]
        hits += [f"{rel}: {m.group(0).decode(errors='replace')}" for m in assigned.finditer(data)
                 if not re.match(rb"""["'`]?(\{\{|\$|<|\.\.\.|none\b|null\b)""", m.group(2), re.I)]
    assert not hits, hits
    ignored = subprocess.run(["git", "check-ignore", "-q", ".dvc/config.local"], cwd=ROOT)
    assert ignored.returncode == 0, ".dvc/config.local (where DVC keeps remote credentials) must be git-ignored"
