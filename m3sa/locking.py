"""One writer per output folder: an advisory file lock held while a stage writes its outputs.

Two runs of a stage started at once in one workspace would interleave their files (two
extractions renaming Parquet files over each other, two trainings appending to the same
curves). :func:`output_lock` takes ``fcntl.flock`` on ``<folder>/.lock`` for the duration
of the run; a second run waits up to ``timeout`` seconds, then stops with an
:class:`~m3sa.errors.OutputError` naming the folder and the holder (pid, host, start time).

The kernel releases the lock when the holder ends, however it ends (SIGKILL included), so
a crash never leaves a lock that blocks the next run. The file itself is removed on
release, so a finished run adds nothing to the outputs DVC hashes; a waiter that locked a
file just removed by the previous holder notices (its inode is gone) and tries again.
Locks are per machine: runs on several hosts sharing a network file system are not
serialised.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from m3sa.atomic import os_reason
from m3sa.errors import OutputError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def _holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


@contextmanager
def output_lock(folder: str | Path, timeout: float = 0.0, poll: float = 0.2, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) while the block runs; yields the lock path.

    ``timeout`` seconds to wait for a running holder (0: fail at once). Raises
    :class:`OutputError` when the folder or its lock file cannot be created (read-only
    location) or when the lock stays taken.
    """
    folder = Path(folder)
    path = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{folder}: cannot create the output folder ({os_reason(err)})") from None
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(f"{path}: cannot create the lock file ({os_reason(err)}); "
                              f"is {folder} writable?") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in _BUSY:
                raise OutputError(f"{path}: cannot lock ({os_reason(err)})") from None
            if time.monotonic() >= deadline:
                raise OutputError(
                    f"{folder}: another run is writing here ({_holder(path)}, lock {path}); wait for it to "
                    "finish, then run again") from None
            if not waited:
                log.info("%s: waiting for %s to finish (up to %.0f s)", folder, _holder(path), timeout)
                waited = True
            time.sleep(poll)
            continue
        try:  # the previous holder may have removed the file between our open and our lock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
    except OSError:
        pass  # the note is informative only; the lock is what counts
    try:
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)  # still locked: no one else can be using this file
        except OSError:
            pass
        os.close(fd)
