"""Overlap rule and word-level averaging: hand-computed cases and equality with the SDK's loop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3sa.data.align import EPSILON, float32_tolerance, overlap_members, word_average


def sdk_members(ref: np.ndarray, sub: np.ndarray, epsilon: float = 1e-5) -> np.ndarray:
    """Indices the CMU-MultimodalSDK's ``__intersect_and_copy`` keeps (its code, indices added)."""
    ref_copy = ref.copy()
    ref_copy[1] = -ref_copy[1]
    ref_copy = ref_copy[::-1]
    sub_copy = sub.copy()
    sub_copy[:, 0] = -sub_copy[:, 0]
    where_intersect = np.all((sub_copy - ref_copy) > (-epsilon), axis=1)
    idx = np.flatnonzero(where_intersect)
    inter = sub[where_intersect, :]
    inter = np.concatenate([np.maximum(inter[:, 0], ref[0])[:, None], np.minimum(inter[:, 1], ref[1])[:, None]], axis=1)
    return idx[np.abs(inter[:, 0] - inter[:, 1]) > epsilon]


def frames_at(hz: float, n: int) -> np.ndarray:
    i = np.arange(n + 1, dtype=np.float64)
    return np.stack([i[:-1] / hz, i[1:] / hz], axis=1)  # (n, 2)


def members(indptr: np.ndarray, indices: np.ndarray, j: int) -> list[int]:
    return indices[indptr[j]:indptr[j + 1]].tolist()


def test_hand_computed_edges():
    frames = frames_at(100, 10)  # [0, .01], [.01, .02], ...
    words = np.array([
        [0.015, 0.035],  # straddles frames 1 and 3 -> 1, 2, 3
        [0.02, 0.03],  # touches frames 1 and 3 only -> 2
        [0.035, 0.05],  # shares frame 3 with the first word -> 3, 4
        [0.05, 0.05],  # zero length -> nothing
        [0.02 + 5e-6, 0.03],  # within the 1e-5 tolerance of frame 1's end -> frame 2 only
        [0.0, 0.1 + 1.0],  # everything
    ])
    indptr, indices = overlap_members(frames, words)
    assert members(indptr, indices, 0) == [1, 2, 3]
    assert members(indptr, indices, 1) == [2]
    assert members(indptr, indices, 2) == [3, 4]
    assert members(indptr, indices, 3) == []
    assert members(indptr, indices, 4) == [2]
    assert members(indptr, indices, 5) == list(range(10))


def test_word_average_is_the_mean_of_its_frames_and_nan_without_frames():
    frames = frames_at(100, 6)
    x = np.arange(12, dtype=np.float32).reshape(6, 2)  # frame i = [2i, 2i+1]
    words = np.array([[0.015, 0.035], [0.0, 0.01], [1.0, 2.0]])
    means, counts = word_average(x, frames, words)
    np.testing.assert_allclose(means[0], x[1:4].mean(axis=0))
    np.testing.assert_allclose(means[1], x[0])
    assert counts.tolist() == [3, 1, 0] and np.isnan(means[2]).all()


def test_zero_length_frames_belong_to_nothing():
    frames = np.array([[0.0, 0.01], [0.01, 0.01], [0.01, 0.02]])
    indptr, indices = overlap_members(frames, np.array([[0.0, 0.02]]))
    assert members(indptr, indices, 0) == [0, 2]


def test_unsorted_rows_give_the_same_members_in_time_order():
    rng = np.random.default_rng(0)
    frames = frames_at(30, 40)
    words = np.sort(rng.uniform(0, 1.4, (15, 2)), axis=1)
    ref = overlap_members(frames, words)
    perm = rng.permutation(len(frames))
    indptr, indices = overlap_members(frames[perm], words)
    for j in range(len(words)):
        assert sorted(perm[members(indptr, indices, j)]) == members(*ref, j)
    # rows whose ends are not monotone once sorted by start (overlapping frames of mixed length)
    frames2 = np.array([[0.0, 0.5], [0.1, 0.2], [0.15, 0.6], [0.3, 0.35]])
    q = np.array([[0.19, 0.31], [0.4, 0.45]])
    indptr, indices = overlap_members(frames2, q)
    for j in range(len(q)):
        assert members(indptr, indices, j) == sdk_members(q[j], frames2).tolist()


@st.composite
def _grid_case(draw):
    """Frames on a 100 or 30 Hz grid; word edges on a 10 ms grid, some nudged around the tolerance."""
    hz = draw(st.sampled_from([100.0, 30.0]))
    n = draw(st.integers(0, 120))
    k = draw(st.integers(0, 12))
    edges = np.array(draw(st.lists(st.integers(0, int(n / hz * 100) + 3), min_size=2 * k, max_size=2 * k)),
                     dtype=np.float64) / 100
    jitter = np.array(draw(st.lists(st.sampled_from([0.0, 0.0, 1e-5, -1e-5, 5e-6, -5e-6, 1.2e-5, 3e-6]),
                                    min_size=2 * k, max_size=2 * k)))
    words = np.sort((edges + jitter).reshape(k, 2), axis=1)
    return frames_at(hz, n), words


@settings(max_examples=300, deadline=None)
@given(_grid_case())
def test_members_equal_the_sdk_per_word_loop(case):
    frames, words = case
    indptr, indices = overlap_members(frames, words)
    for j, w in enumerate(words):
        assert members(indptr, indices, j) == sdk_members(w, frames).tolist()


@settings(max_examples=100, deadline=None)
@given(_grid_case(), st.integers(0, 2**31 - 1))
def test_word_average_equals_the_per_word_mean(case, seed):
    frames, words = case
    x = np.random.default_rng(seed).normal(size=(len(frames), 3)).astype(np.float32) * 50
    means, counts = word_average(x, frames, words)
    for j, w in enumerate(words):
        idx = sdk_members(w, frames)
        assert counts[j] == len(idx)
        if len(idx):
            np.testing.assert_allclose(means[j], x[idx].mean(axis=0), rtol=1e-5, atol=1e-4)


def _float32_rounds_up(lo: float, hi: float) -> float:
    """A time t on the 10 ms grid in [lo, hi) whose float32 rounding lands more than 1e-5 s late."""
    t = np.arange(int(lo * 100), int(hi * 100)) / 100
    late = t[np.float32(t).astype(np.float64) - t > EPSILON]
    assert len(late), "no such time in range"
    return float(late[0])


def test_float32_label_end_does_not_pull_in_a_word_that_only_touches_it():
    t = _float32_rounds_up(256, 512)
    seg = np.array([[t - 3.0, t]], dtype=np.float32)  # as a genuine label file stores it
    words = np.array([[t - 0.4, t], [t, t + 0.3]])  # the next word starts exactly at the true end
    plain = overlap_members(words, seg.astype(np.float64))
    assert members(*plain, 0) == [0, 1]  # the SDK's fixed 1e-5 s pulls the next word in
    tol0, tol1 = float32_tolerance(seg[:, 0]), float32_tolerance(seg[:, 1])
    fixed = overlap_members(words, seg.astype(np.float64), EPSILON, tol0, tol1)
    assert members(*fixed, 0) == [0]


def test_float32_tolerance_is_the_sdk_epsilon_on_short_videos():
    t = np.array([0.0, 10.0, 100.0, 127.9])
    assert (float32_tolerance(t) == EPSILON).all()
    assert float32_tolerance(np.array([300.0]))[0] == pytest.approx(2 ** -15)  # float32 step in [256, 512)
