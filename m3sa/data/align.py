"""Interval overlap and word-level averaging, vectorised (DESIGN section 2).

Overlap rule (the CMU-MultimodalSDK's, ``__intersect_and_copy``): a row (frame or word)
``[s0, s1]`` belongs to a reference interval ``[r0, r1]`` when their clipped overlap
``min(s1, r1) - max(s0, r0)`` is longer than a tolerance (the SDK's ``epsilon`` = 1e-5 s).
A frame straddling the edge between two words belongs to both; one that only touches an
edge belongs to neither. In floating point the clipped overlap is the smallest of the four
differences ``s1 - s0``, ``s1 - r0``, ``r1 - s0``, ``r1 - r0`` (subtraction is monotone),
so for rows sorted by start and by end the members of a reference form one contiguous
run, found with two ``searchsorted`` calls and corrected to the exact predicate.

Label files store intervals as float32, whose rounding error passes 1e-5 s after 256 s of
video; :func:`float32_tolerance` widens the tolerance to one float32 step at that time, so
a word that only touches a segment is not pulled in on long videos.

Word-level alignment (MAG-BERT, M3SA): each word gets the mean of the frames overlapping
it. The SDK loops over words; here one sparse (words x frames) 0/1 matrix times the frame
matrix gives every sum at once, with exactly the SDK's membership.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

EPSILON = 1e-5  # seconds, the SDK's alignment tolerance


def float32_tolerance(t: np.ndarray, eps: float = EPSILON) -> np.ndarray:
    """Per-time tolerance for intervals stored as float32: max(eps, float32 step at |t|)."""
    step = np.spacing(np.abs(np.asarray(t, dtype=np.float64)).astype(np.float32)).astype(np.float64)
    return np.maximum(eps, step)


def is_monotone(intervals: np.ndarray) -> bool:
    """True when starts and ends are both non-decreasing (the fast path's precondition)."""
    if len(intervals) < 2:
        return True
    return bool(np.all(intervals[1:, 0] >= intervals[:-1, 0]) and np.all(intervals[1:, 1] >= intervals[:-1, 1]))


def _first_after(ends: np.ndarray, q0: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """First index i with ``ends[i] - q0 > tol`` (ends non-decreasing), exactly."""
    n = len(ends)
    i = np.searchsorted(ends, q0 + tol, side="right")
    if n == 0:
        return i
    while True:  # step back while the row before already qualifies (rounding of q0 + tol)
        prev = np.maximum(i - 1, 0)
        m = (i > 0) & (ends[prev] - q0 > tol)
        if not m.any():
            break
        i = i - m
    while True:  # step forward while row i does not qualify
        cur = np.minimum(i, n - 1)
        m = (i < n) & ~(ends[cur] - q0 > tol)
        if not m.any():
            break
        i = i + m
    return i


def _first_not_before(starts: np.ndarray, q1: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """First index i with not ``q1 - starts[i] > tol`` (starts non-decreasing), exactly."""
    n = len(starts)
    i = np.searchsorted(starts, q1 - tol, side="left")
    if n == 0:
        return i
    while True:  # step back while the row before does not qualify
        prev = np.maximum(i - 1, 0)
        m = (i > 0) & ~(q1 - starts[prev] > tol)
        if not m.any():
            break
        i = i - m
    while True:  # step forward while row i still qualifies
        cur = np.minimum(i, n - 1)
        m = (i < n) & (q1 - starts[cur] > tol)
        if not m.any():
            break
        i = i + m
    return i


def overlap_members(rows: np.ndarray, queries: np.ndarray, eps: float = EPSILON,
                    tol_start: np.ndarray | float | None = None,
                    tol_end: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows overlapping each query interval by more than the tolerance, as CSR.

    rows (n, 2), queries (q, 2) start/end seconds. ``tol_start`` / ``tol_end`` (scalar or
    (q,)) replace ``eps`` at each query's start / end edge (see :func:`float32_tolerance`);
    row and query lengths are always compared with ``eps``. Returns ``(indptr (q+1,),
    indices)``: the members of query j are ``indices[indptr[j]:indptr[j+1]]``, ascending in
    time. Rows of length <= eps belong to nothing (as in the SDK).
    """
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    queries = np.asarray(queries, dtype=np.float64).reshape(-1, 2)
    q = len(queries)
    t0 = np.broadcast_to(np.asarray(eps if tol_start is None else tol_start, dtype=np.float64), (q,))
    t1 = np.broadcast_to(np.asarray(eps if tol_end is None else tol_end, dtype=np.float64), (q,))
    with np.errstate(invalid="ignore"):  # inf - inf is NaN: not a valid interval
        q_ok = queries[:, 1] - queries[:, 0] > eps
    order = None
    if not is_monotone(rows):
        order = np.argsort(rows[:, 0], kind="stable")
        rows = rows[order]
        if not is_monotone(rows):
            return _dense_members(rows, queries, eps, t0, t1, q_ok, order)
    lo = _first_after(rows[:, 1], queries[:, 0], t0)
    hi = _first_not_before(rows[:, 0], queries[:, 1], t1)
    cnt = np.where(q_ok, np.maximum(hi - lo, 0), 0)
    indptr = np.zeros(q + 1, dtype=np.int64)
    np.cumsum(cnt, out=indptr[1:])
    # indices = concatenation of arange(lo[j], lo[j] + cnt[j])
    indices = np.arange(indptr[-1], dtype=np.int64) + np.repeat(lo - indptr[:-1], cnt)
    with np.errstate(invalid="ignore"):
        row_ok = rows[:, 1] - rows[:, 0] > eps
    if len(indices) and not row_ok.all():  # drop zero-length / reversed rows
        keep = row_ok[indices]
        owner = np.repeat(np.arange(q), cnt)  # query of each member
        indices = indices[keep]
        np.cumsum(np.bincount(owner[keep], minlength=q), out=indptr[1:])
    if order is not None:
        indices = order[indices]
    return indptr, indices


def _dense_members(rows: np.ndarray, queries: np.ndarray, eps: float, t0: np.ndarray, t1: np.ndarray,
                   q_ok: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fallback for rows whose ends are not monotone: the predicate on a (q, n) grid, in chunks."""
    n = len(rows)
    with np.errstate(invalid="ignore"):
        row_ok = rows[:, 1] - rows[:, 0] > eps
    chunk = max(1, 4_000_000 // max(n, 1))
    parts, counts = [], []
    for a in range(0, len(queries), chunk):
        qs = queries[a:a + chunk]
        m = ((rows[None, :, 1] - qs[:, None, 0] > t0[a:a + chunk, None])
             & (qs[:, None, 1] - rows[None, :, 0] > t1[a:a + chunk, None])
             & row_ok[None, :] & q_ok[a:a + chunk, None])  # (chunk, n)
        qi, ri = np.nonzero(m)
        parts.append(ri)
        counts.append(np.bincount(qi, minlength=len(qs)))
    cnt = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    indptr = np.zeros(len(queries) + 1, dtype=np.int64)
    np.cumsum(cnt, out=indptr[1:])
    indices = order[np.concatenate(parts)] if parts else np.zeros(0, dtype=np.int64)
    return indptr, indices.astype(np.int64)


def sum_members(x: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per-query sums of the member rows of x (n, d) -> (q, d), in x's float dtype."""
    q = len(indptr) - 1
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    ones = np.ones(len(indices), dtype=x.dtype)
    idx_t = np.int32 if len(x) < 2**31 and len(indices) < 2**31 else np.int64
    mat = sp.csr_matrix((ones, indices.astype(idx_t, copy=False), indptr.astype(idx_t, copy=False)),
                        shape=(q, len(x)))  # (q, n) 0/1
    return np.asarray(mat @ x)  # (q, n) @ (n, d) -> (q, d)


def word_average(x: np.ndarray, frames: np.ndarray, words: np.ndarray,
                 eps: float = EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the frames overlapping each word (the SDK's word alignment, DESIGN section 2).

    x (n, d) frame features, frames (n, 2) and words (w, 2) intervals. Returns
    ``(means (w, d) float64, counts (w,))``; a word that no frame overlaps gets NaN.
    Non-finite frame values propagate: clean them first.
    """
    indptr, indices = overlap_members(frames, words, eps)
    counts = np.diff(indptr)
    sums = sum_members(x, indptr, indices).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[counts == 0] = np.nan
    return means, counts
