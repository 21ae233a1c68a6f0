"""The features folder's Parquet splits: batched writing, the train split's second pass, the swap into place.

:class:`OutputFiles` names the temporary files and renames the finished set into place;
:class:`SplitWriter` buffers one split's chunks and writes them in batches, standardised,
or raw to an Arrow file that :func:`rewrite_standardised` turns into Parquet once the train
statistics are known.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from m3sa.atomic import os_reason
from m3sa.data.chunk import Chunk
from m3sa.data.features import SPLITS, arrow_bools, arrow_lists, arrow_numeric, arrow_strings, sequence_values
from m3sa.data.standardize import Norm, normalise
from m3sa.errors import OutputError

log = logging.getLogger(__name__)

FLUSH_BYTES = 4 << 20  # buffered output per split before a batch is written (bounds memory)


class OutputFiles:
    """The features folder's temporary files, renamed into place together by :meth:`publish`.

    Entering creates the folder. Leaving removes every temporary file and turns an OSError
    into an OutputError naming the folder. The temporary names are fixed, so what a killed
    run left is replaced and removed by the next.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.raw_train = folder / ".train.raw.arrow.tmp"  # train rows before standardisation
        self.meta = folder / ".meta.json.tmp"

    def split(self, name: str) -> Path:
        """The temporary Parquet file of split ``name``."""
        return self.folder / f".{name}.parquet.tmp"

    def publish(self, meta_json: str) -> None:
        """Write meta.json and move the splits and it into place, meta.json last."""
        self.meta.write_text(meta_json)
        # meta.json marks a complete set: it is absent while the Parquet files are being
        # replaced, so a run killed between two renames leaves no mix that looks complete.
        (self.folder / "meta.json").unlink(missing_ok=True)
        for s in SPLITS:
            os.replace(self.split(s), self.folder / f"{s}.parquet")
        os.replace(self.meta, self.folder / "meta.json")

    def __enter__(self) -> OutputFiles:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{self.folder}: cannot create the output folder ({os_reason(err)})") from None
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        for path in (self.raw_train, *map(self.split, SPLITS), self.meta):
            path.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OutputError(f"{self.folder}: cannot write the features ({os_reason(err)})") from None


def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer tuned for the features (see the comment)."""
    # Dictionary encoding only where values repeat, statistics only on scalar columns: on
    # nested float lists either one costs more than the write itself. No compression: the
    # features are noise-like floats (snappy saves 4% of the size for 30% more write time).
    strings = [f.name for f in schema if f.name in ("video_id", "split", "words")]
    scalars = [f.name for f in schema if not pa.types.is_list(f.type)]
    return pq.ParquetWriter(path, schema, compression="none", use_dictionary=strings, write_statistics=scalars)


def sequences(counts: np.ndarray, x: np.ndarray) -> pa.Array:
    """list<list<float32>>: segment i holds counts[i] consecutive rows of x (rows, d)."""
    return arrow_lists(counts, arrow_lists(np.full(len(x), x.shape[1]), arrow_numeric(x.reshape(-1), pa.float32())))


def standardised(col: pa.Array, mean: np.ndarray, std: np.ndarray) -> pa.Array:
    """(x - mean) / std on a list<list<float32>> column; NaN rows (words without frames) -> 0."""
    x, offsets = sequence_values(col, len(mean))  # (rows, d), (n+1,)
    return sequences(np.diff(offsets), normalise(x, mean, std))


class SplitWriter:
    """Buffers the chunks of one split and writes them in batches of about ``FLUSH_BYTES``.

    With ``norm`` the sequences are standardised and written to Parquet; without, they are
    written as they are to an uncompressed Arrow IPC file (the train split, whose statistics
    are known only at its end). ``norm`` may be set before the first chunk arrives. Leaving
    the context without :meth:`close` (an error) closes the file unfinished.
    """

    def __init__(self, path: Path, schema: pa.Schema, dims: dict[str, int], norm: Norm | None) -> None:
        self.schema = schema
        self.dims = dims
        self.norm = norm
        self.writer = parquet_writer(path, schema) if norm is not None else pa.ipc.new_file(str(path), schema)
        self.rows = 0
        self.chunks: list[Chunk] = []
        self.bytes = 0
        self.closed = False

    def add(self, chunk: Chunk) -> None:
        if not len(chunk):
            return
        self.chunks.append(chunk)
        self.bytes += sum(x.nbytes for rows in chunk.seqs.values() for x in rows) + 64 * len(chunk)
        if self.bytes >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.chunks:
            return
        cs = self.chunks
        n = sum(len(c) for c in cs)
        cols: dict[str, pa.Array] = {
            "segment_id": arrow_strings([s.encode() for c in cs for s in c.segment_ids]),
            "video_id": arrow_strings([v.encode() for c in cs for v in c.video_ids]),
            "split": arrow_strings([c.split.encode() for c in cs for _ in range(len(c))]),
            "start": arrow_numeric(np.concatenate([c.start for c in cs]), pa.float64()),
            "end": arrow_numeric(np.concatenate([c.end for c in cs]), pa.float64()),
            "label": arrow_numeric(np.concatenate([c.label for c in cs]), pa.float32()),
        }
        if "words" in self.schema.names:
            words = [w for c in cs for w in c.words]  # type: ignore[union-attr]
            cols["words"] = arrow_lists(np.fromiter(map(len, words), np.int64, len(words)),
                                        arrow_strings([t for w in words for t in w]))
        for m, dim in self.dims.items():
            rows = [x for c in cs for x in c.seqs[m]]
            counts = np.fromiter(map(len, rows), np.int32, len(rows))
            x = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)  # (total rows, d)
            if self.norm is not None:
                x = normalise(x, *self.norm[m])
            cols[m] = sequences(counts, x)
            cols[f"{m}_len"] = arrow_numeric(counts, pa.int32())
        for name in self.schema.names:
            if name.startswith("gt_"):
                cols[name] = arrow_bools([g for c in cs for g in c.gt[name[3:]]])  # type: ignore[index]
        self.writer.write(pa.Table.from_arrays([cols[f.name] for f in self.schema], schema=self.schema))
        self.rows += n
        self.chunks, self.bytes = [], 0

    def close(self) -> None:
        self.flush()
        self.closed = True
        self.writer.close()

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close without flushing (the file is deleted next); never raises, so that the error
        that ended the run is the one reported (closing may fail again on a full disk)."""
        if not self.closed:
            self.closed = True
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - already failing; the file is deleted next
                log.debug("closing a failed output writer", exc_info=True)


def rewrite_standardised(src: Path, dst: Path, schema: pa.Schema, norm: Norm) -> None:
    """Pass 2: copy the raw Arrow file src to Parquet dst batch by batch, standardising the
    sequence columns."""
    with pa.OSFile(str(src)) as source, parquet_writer(dst, schema) as writer:  # one batch in memory at a time
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            arrays = [standardised(batch.column(j), *norm[f.name]) if f.name in norm else batch.column(j)
                      for j, f in enumerate(schema)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
