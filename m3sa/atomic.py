"""Files that appear whole or not at all (no torch import: for the report and the CLI tools).

:func:`atomic_write` runs a writer callback on a temporary file beside the target, flushes
it to disk, then renames it over the target; on any error the temporary file is removed,
the previous file (if any) is left as it was, and an OSError becomes an
:class:`~m3sa.errors.OutputError` naming the target. :func:`write_atomic` does it for bytes
or text.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from m3sa.errors import OutputError


def os_reason(err: OSError) -> str:
    """The reason of an OSError in one short line (h5py puts the errno text deep in a long,
    multi-line message)."""
    if err.errno:
        return os.strerror(err.errno)  # pyarrow wraps it in a longer text
    if err.strerror:
        return err.strerror
    text = str(err)
    found = re.search(r"error message = '([^']*)'", text)
    if found:
        return found.group(1)
    return (text.strip().splitlines() or [err.__class__.__name__])[0][:200]


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform can fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync, then rename it to
    ``path`` and fsync the folder; the file keeps the previous file's mode (made writable by
    its owner: a previous file may be a read-only link into DVC's cache), else 0644.
    Returns ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({os_reason(err)})") from None
    try:
        try:  # mkstemp makes 0600 files; keep the previous file's mode, else the usual 0644
            os.fchmod(fd, (path.stat().st_mode & 0o7777) | 0o200 if path.exists() else 0o644)
        except OSError:
            pass
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({os_reason(err)})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns ``path``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return atomic_write(path, lambda fh: fh.write(raw))
