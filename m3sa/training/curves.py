"""Training curves of one seed through dvclive (``train.live_dir/seed_<s>``; rank 0 only)."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from m3sa.atomic import os_reason
from m3sa.errors import OutputError


class Curves:
    """Per-epoch train losses, valid metrics and filter values of one seed.

    Opened fresh and rewritten from the checkpoint's ``history`` on resume, so a run killed (or
    out of disk) while writing them leaves no truncated file or repeated step behind.
    """

    def __init__(self, live_dir: Path, seed: int, history: list[dict[str, Any]]) -> None:
        from dvclive import Live

        self.folder = live_dir / f"seed_{seed}"
        with self._errors():
            self.live = Live(dir=str(self.folder), resume=False, dvcyaml=False, save_dvc_exp=False, report=None)
            for h in history:
                self._log(h["epoch"], h["train"], h["valid"], h["filter"])

    def log(self, epoch: int, means: dict[str, float], scores: dict[str, float], filters: dict[str, float]) -> None:
        with self._errors():
            self._log(epoch, means, scores, filters)

    def close(self) -> None:
        with self._errors():
            self.live.end()

    def _log(self, epoch: int, means: dict[str, float], scores: dict[str, float], filters: dict[str, float]) -> None:
        self.live.step = epoch - 1
        for k, v in means.items():
            self.live.log_metric(f"train/{k}", v)
        for k, v in scores.items():
            self.live.log_metric(f"valid/{k}", v)
        for m, v in filters.items():
            self.live.log_metric(f"valid/filter_{m}", v)
        self.live.next_step()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """dvclive's write errors (read-only folder, full disk) as OutputError naming the folder.

        dvclive rewrites its files in place, so a failed write may leave one cut short; the
        folder is removed instead (a resumed run rebuilds it from last.pt's history).
        """
        try:
            yield
        except OSError as err:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise OutputError(f"{self.folder}: cannot write the training curves ({os_reason(err)})") from None
