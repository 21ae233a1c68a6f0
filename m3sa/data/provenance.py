"""SHA-256 of the extraction's input files (meta.json ``inputs``), hashed while it runs.

Hashing the inputs costs about as much CPU as reading them, so :class:`InputHashes` hashes
them beside the extraction: in a forked process where the platform has fork (a thread would
fight the extractor for the GIL), a thread elsewhere. The result comes back over a pipe.
The process is not a ``concurrent.futures`` pool worker on purpose: a pool's idle worker
waits for its next task forever once the extraction is killed, while this one sends its
one result and exits.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType

from m3sa.errors import DataError


def sha256(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read 4 MiB at a time."""
    h = hashlib.sha256()
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _hash_files(paths: list[Path], conn: Connection) -> None:
    """Send ``("ok", {name: sha256})`` or ``("error", message)`` over ``conn``."""
    try:
        conn.send(("ok", {p.name: sha256(p) for p in paths}))
    except OSError as err:
        conn.send(("error", f"{err.filename}: cannot be read to hash it ({err.strerror})"))
    finally:
        conn.close()


class InputHashes:
    """File name -> SHA-256 of ``paths``, computed beside the caller; a context manager.

    Leaving the context before :meth:`result` (an error ended the extraction) stops the
    hashing, so that error is not held up.
    """

    def __init__(self, paths: list[Path]) -> None:
        self._result: dict[str, str] | None = None if paths else {}
        if not paths:
            return
        if "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            self._conn, child = ctx.Pipe(duplex=False)
            self._worker: BaseProcess | threading.Thread = ctx.Process(target=_hash_files, args=(paths, child),
                                                                       daemon=True)
        else:  # pragma: no cover - platforms without fork
            self._conn, child = multiprocessing.Pipe(duplex=False)
            self._worker = threading.Thread(target=_hash_files, args=(paths, child), daemon=True)
        self._worker.start()
        if isinstance(self._worker, BaseProcess):
            child.close()  # the worker's end: the pipe reports EOF if the worker dies

    def result(self) -> dict[str, str]:
        """The hashes (``{}`` without paths); waits for them."""
        if self._result is not None:
            return self._result
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise DataError("hashing the input files failed (the hashing process ended early)") from None
        finally:
            self._worker.join()
            self._conn.close()
        if status != "ok":
            raise DataError(value)
        self._result = value
        return value

    def cancel(self) -> None:
        """Stop the hashing, if it still runs; what it would have found is not needed."""
        if self._result is not None or self._conn.closed:
            return
        if isinstance(self._worker, BaseProcess) and self._worker.is_alive():
            self._worker.terminate()
            self._worker.join()
        self._conn.close()

    def __enter__(self) -> InputHashes:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()
