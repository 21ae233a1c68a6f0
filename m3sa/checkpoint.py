"""Checkpoints and atomic output files.

A checkpoint (docs/architecture.md, "Checkpoints") is a ``torch.save`` of plain data and
tensors only, so it loads with ``torch.load(weights_only=True)``: no code runs on load. It
carries everything needed to rebuild the model (resolved params, feature widths,
modalities) and to preprocess new data (the train-split standardisation statistics from
``meta.json``). Every file is written to a temporary name in the target folder and moved
into place with ``os.replace``, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from m3sa.atomic import atomic_write
from m3sa.config import Config, config_from_dict
from m3sa.errors import CheckpointError, M3SAError

FORMAT = "m3sa-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "model_state", "epoch", "seed", "best_valid", "config", "dims",
                 "modalities", "standardization")


# ---------------------------------------------------------------- JSON files


def _json_safe(obj: Any) -> Any:
    """NaN/inf become null (strict JSON); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _json_safe(obj.item())
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented, strict JSON (non-finite numbers become null)."""
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))


# ---------------------------------------------------------------- checkpoints


def make_checkpoint(*, model_state: dict[str, torch.Tensor], epoch: int, seed: int, best_valid: float | None,
                    cfg: Config, dims: dict[str, int], modalities: tuple[str, ...] | list[str],
                    standardization: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """The checkpoint dict of docs/architecture.md; ``extra`` adds training state (last.pt)."""
    state = {k: v.detach().cpu() for k, v in model_state.items()}
    return {"format": FORMAT, "version": VERSION, "model_state": state, "epoch": int(epoch), "seed": int(seed),
            "best_valid": None if best_valid is None else float(best_valid), "config": cfg.to_dict(),
            "dims": {k: int(v) for k, v in dims.items()}, "modalities": list(modalities),
            "standardization": standardization or {}, **extra}


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a dict made by :func:`make_checkpoint`."""
    if checkpoint.get("format") != FORMAT:
        raise ValueError("save_checkpoint expects a dict built by make_checkpoint")
    path = Path(path)
    atomic_write(path, lambda fh: _torch_save(checkpoint, fh, path.parent))


def _torch_save(checkpoint: dict[str, Any], fh: Any, folder: Path) -> None:
    """``torch.save``, with a failed write reported as the OSError it is: torch's zip writer
    raises RuntimeError ("unexpected pos") when the disk fills, which would escape as a traceback."""
    try:
        torch.save(checkpoint, fh)
    except RuntimeError as err:
        try:
            full = shutil.disk_usage(folder).free < 2**20
        except OSError:
            full = False
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from err
        raise OSError(f"torch.save failed: {str(err)[:160]}") from err  # os_reason shows its first line


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; :class:`CheckpointError` for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; run `python -m stages.train` first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "pickle protocol 4" on foreign files: refused below anyway
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - undecodable bytes raise many types (KeyError, UnpicklingError, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise CheckpointError(
            f"{path}: not a checkpoint written by m3sa, or corrupt ({first[:160]}); retrain with `python -m stages.train`"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an m3sa checkpoint (no 'format': '{FORMAT}' entry)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')!r} is not supported (expected {VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}; retrain with `python -m stages.train`")
    return ckpt


def checkpoint_config(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    """The resolved :class:`Config` stored in a checkpoint."""
    try:
        return config_from_dict(ckpt["config"], stored=True)
    except M3SAError as err:
        raise CheckpointError(f"{path}: stored params are not valid for this version of m3sa ({err})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any], Config]:
    """Rebuild a trained model from a checkpoint alone: (model in eval mode, checkpoint, config)."""
    from m3sa.models import build_model  # local import: checkpoints can be inspected without the model code

    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    model = build_model(cfg.model, dict(ckpt["dims"]), tuple(ckpt["modalities"]))
    try:
        result = model.load_state_dict(ckpt["model_state"], strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path}: weights do not fit model '{cfg.model.name}' ({first[:200]})") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not fit model '{cfg.model.name}' (missing: {result.missing_keys[:3]}, "
            f"unexpected: {result.unexpected_keys[:3]}); retrain with `python -m stages.train`"
        )
    model.to(device).eval()
    return model, ckpt, cfg
