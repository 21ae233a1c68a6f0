"""Training curves of one seed, in dvclive's file layout (``train.live_dir/seed_<s>``; rank 0 only).

The files are the ones ``dvclive.Live(dvcyaml=False, report=None)`` writes, so ``dvc plots``
and dvc.yaml's plot definitions read them unchanged:

- ``plots/metrics/<train|valid>/<name>.tsv``: a ``step<TAB><name>`` header, then one
  ``<epoch - 1><TAB><value>`` row per epoch;
- ``metrics.json``: the latest value of each curve, nested by ``train`` / ``valid``, and ``step``.

They are written here with the standard library: importing dvclive (which imports dvc and
pandas) would add about 110 MiB to every training process for a few lines of text.
"""

from __future__ import annotations

import json
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
        self.folder = live_dir / f"seed_{seed}"
        self.latest: dict[str, dict[str, float]] = {}
        with self._errors():
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            for h in history:
                self._log(h["epoch"], h["train"], h["valid"], h["filter"])

    def log(self, epoch: int, means: dict[str, float], scores: dict[str, float], filters: dict[str, float]) -> None:
        with self._errors():
            self._log(epoch, means, scores, filters)

    def close(self) -> None:
        """Nothing is held open (every epoch's rows are on disk when :meth:`log` returns)."""

    def _log(self, epoch: int, means: dict[str, float], scores: dict[str, float], filters: dict[str, float]) -> None:
        step = epoch - 1
        rows = {("train", k): v for k, v in means.items()}
        rows.update({("valid", k): v for k, v in scores.items()})
        rows.update({("valid", f"filter_{m}"): v for m, v in filters.items()})
        for (group, name), value in rows.items():
            path = self.folder / "plots" / "metrics" / group / f"{name}.tsv"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"step\t{name}\n")
            with open(path, "a") as fh:
                fh.write(f"{step}\t{_number(value)}\n")
            self.latest.setdefault(group, {})[name] = float(value) if value is not None else float("nan")
        (self.folder / "metrics.json").write_text(json.dumps({**self.latest, "step": step}, indent=4) + "\n")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Write errors (read-only folder, full disk) as OutputError naming the folder.

        A failed write may leave a file cut short; the folder is removed instead (a resumed
        run rebuilds it from last.pt's history).
        """
        try:
            yield
        except OSError as err:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise OutputError(f"{self.folder}: cannot write the training curves ({os_reason(err)})") from None


def _number(value: Any) -> str:
    """A value as dvclive writes it (Python's float repr; None, as JSON gives NaN back, is nan)."""
    return repr(float(value)) if value is not None else "nan"
