"""Where a run's numbers come from: code revision, parameters, pipeline hashes, software."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

PACKAGES = ("m3sa", "torch", "transformers", "numpy", "pandas", "pyarrow", "scikit-learn", "h5py", "matplotlib",
            "dvc", "dvclive", "prefect")
WALL_KEYS = ("wall_s", "wall_time_s", "elapsed_s", "duration_s", "seconds")


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(root: Path) -> tuple[str, Optional[bool], int]:
    """(commit or a reason, dirty flag or None, changed+untracked file count)."""
    if _git(root, "rev-parse", "--is-inside-work-tree") is None:
        return "not a git repository", None, 0
    commit = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    status = _git(root, "status", "--porcelain")
    changed = [line for line in (status or "").splitlines() if line.strip()]
    return (commit.strip() if commit else "no commit yet"), (bool(changed) if status is not None else None), len(changed)


def stage_digest(entry: dict[str, Any]) -> str:
    """Short sha256 over one dvc.lock stage entry (cmd, deps/outs hashes, params)."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()[:12]


def lock_stages(lock: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per dvc.lock stage: name, cmd, digest and its outputs' hashes."""
    out = []
    for name, entry in (lock.get("stages") or {}).items():
        if not isinstance(entry, dict):
            continue
        outs = [f"{o.get('path')} {str(o.get('md5') or o.get('hash') or '')[:8]}"
                for o in entry.get("outs") or [] if isinstance(o, dict)]
        out.append({"stage": name, "cmd": str(entry.get("cmd", "")), "digest": stage_digest(entry),
                    "deps": len(entry.get("deps") or []), "outs": "; ".join(outs)})
    return out


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def find_wall_time(doc: Any) -> Optional[float]:
    """Seconds a stage recorded in its JSON output: a top-level key in :data:`WALL_KEYS`,
    the same under ``timing``, or the sum over ``per_seed`` entries."""
    if not isinstance(doc, dict):
        return None
    for where in (doc, doc.get("timing") if isinstance(doc.get("timing"), dict) else {}):
        for key in WALL_KEYS:
            if isinstance(where.get(key), (int, float)) and not isinstance(where.get(key), bool):
                return float(where[key])
    per_seed = [find_wall_time(e) for e in doc.get("per_seed") or []]
    if per_seed and all(v is not None for v in per_seed):
        return float(sum(per_seed))  # type: ignore[arg-type]
    return None


def find_device(*docs: Any) -> Optional[str]:
    """The first ``device`` recorded at the top level or in a ``per_seed`` entry."""
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        if doc.get("device"):
            return str(doc["device"])
        for entry in doc.get("per_seed") or []:
            if isinstance(entry, dict) and entry.get("device"):
                return str(entry["device"])
    return None
