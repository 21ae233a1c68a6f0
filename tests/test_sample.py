"""The embedded MOSI-like dataset: layout, determinism, planted sentiment."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from m3sa.data import sample
from m3sa.data.csd import decode_words, open_csd, read_csd
from m3sa.data.sample import SIZES, generate_sample, sentence
from m3sa.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "tiny"
    generate_sample(out, "tiny", seed=0, progress=False)
    return out


def test_files_roots_and_widths_follow_the_contract(tiny):
    assert sorted(p.name for p in tiny.iterdir()) == sorted(
        ["words.csd", "acoustic.csd", "visual.csd", "labels.csd", "folds.json", "ground_truth.json"])
    roots = {"words.csd": "words", "acoustic.csd": "COVAREP", "visual.csd": "FACET_4.2",
             "labels.csd": "Opinion Segment Labels"}
    for name, root in roots.items():
        with open_csd(tiny / name) as seq:
            assert seq.root == root and len(seq) == SIZES["tiny"].videos
            assert seq.metadata["root name"] == root
    with open_csd(tiny / "acoustic.csd") as a, open_csd(tiny / "visual.csd") as v:
        vid = a.videos()[0]
        x, iv = a.get(vid)
        assert x.shape[1] == 74 and x.dtype == np.float32
        np.testing.assert_allclose(np.diff(iv, axis=1), 0.01)  # 100 Hz
        y, ivv = v.get(vid)
        assert y.shape[1] == 47
        np.testing.assert_allclose(np.diff(ivv, axis=1), 1 / 30)  # 30 Hz


def test_words_labels_and_nonfinite_values_look_like_mosi(tiny):
    words = read_csd(tiny / "words.csd")
    labels = read_csd(tiny / "labels.csd")
    acoustic = read_csd(tiny / "acoustic.csd")
    all_words = [w for f, _ in words.data.values() for w in decode_words(f)]
    assert "sp" in all_words and len(set(all_words)) > 50
    x = np.concatenate([f for f, _ in acoustic.data.values()])
    assert np.isneginf(x).any() and np.isnan(x).any()
    assert (~np.isfinite(x)).mean() < 1e-3  # a few
    y = np.concatenate([f[:, 0] for f, _ in labels.data.values()])
    assert len(y) == sum(1 for _ in json.loads((tiny / "ground_truth.json").read_text()))
    assert 40 <= len(y) <= 80 and y.min() >= -3 and y.max() <= 3
    for f, ivs in labels.data.values():
        assert f.dtype == np.float32 and ivs.dtype == np.float32  # as genuine label files
        assert (ivs[:, 1] > ivs[:, 0]).all()


def test_labels_are_annotator_means_with_some_exact_zeros():
    y = sample._scores(np.random.default_rng(0), 3000)
    assert ((y > -3 - 1e-9) & (y < 3 + 1e-9)).all()
    assert 0.02 < (y == 0).mean() < 0.1  # MOSI: 4.4 %
    # means of 3, 4 or 5 integer votes: multiples of 1/3, 1/4 or 1/5
    assert np.all(np.isclose(y * 60, np.round(y * 60)))
    assert np.isclose(y * 5, np.round(y * 5)).mean() > 0.4 and np.isclose(y * 3, np.round(y * 3)).mean() > 0.2


def test_sentences_carry_readable_sentiment():
    rng = np.random.default_rng(1)
    pos, neg = set(sample._POS_ADJ + sample._POS_VERB), set(sample._NEG_ADJ + sample._NEG_VERB)
    for score, want, other in ((2.6, pos, neg), (-2.6, neg, pos)):
        for _ in range(20):
            words = sentence(rng, score)
            assert sum(w in want for w in words) > sum(w in other for w in words), words
            assert all(w == w.lower() and w.isascii() for w in words)
    neutral = [sentence(rng, 0.1) for _ in range(20)]
    assert all(not (set(s) & (pos | neg)) for s in neutral)


def test_folds_partition_the_videos(tiny):
    folds = json.loads((tiny / "folds.json").read_text())
    with open_csd(tiny / "labels.csd") as seq:
        videos = set(seq.videos())
    assert [len(folds[s]) for s in ("train", "valid", "test")] == list(SIZES["tiny"].folds)
    assert set().union(*map(set, folds.values())) == videos
    assert sum(map(len, folds.values())) == len(videos)


def _segment_means(tiny: Path, name: str, hz: int, dims: tuple[int, ...]):
    labels = read_csd(tiny / "labels.csd")
    stream = read_csd(tiny / name)
    out, ys, ids = [], [], []
    for vid, (f, ivs) in labels.data.items():
        x, _ = stream.data[vid]
        for k, (s, e) in enumerate(ivs.astype(np.float64)):
            rows = x[int(np.floor(s * hz)):int(np.ceil(e * hz))][:, list(dims)]
            out.append(np.nanmean(np.where(np.isfinite(rows), rows, np.nan), axis=0).mean())
            ys.append(f[k, 0])
            ids.append(f"{vid}[{k}]")
    return np.array(out), np.array(ys), ids


def test_acoustic_signal_is_planted_only_where_ground_truth_says(tiny):
    gt = json.loads((tiny / "ground_truth.json").read_text())
    assert all(g["language"] for g in gt.values())
    a, y, ids = _segment_means(tiny, "acoustic.csd", 100, (2,))
    informative = np.array([gt[i]["acoustic"] for i in ids])
    assert 0.15 < informative.mean() < 0.7
    base = sample._acoustic_base(74)
    z = (a - base[0][2]) / base[1][2]  # in units of the feature's scale
    r_inf = np.corrcoef(z[informative], y[informative])[0, 1]
    r_noise = np.corrcoef(z[~informative], y[~informative])[0, 1]
    assert r_inf > 0.8 and abs(r_noise) < 0.5


def test_same_seed_same_files_other_seed_other_files(tmp_path, tiny):
    again = tmp_path / "again"
    generate_sample(again, "tiny", seed=0, progress=False)
    other = tmp_path / "other"
    generate_sample(other, "tiny", seed=1, progress=False)
    a, b = read_csd(tiny / "acoustic.csd"), read_csd(again / "acoustic.csd")
    assert list(a.data) == list(b.data)
    for vid in a.data:
        np.testing.assert_array_equal(a.data[vid][0], b.data[vid][0])
    assert (tiny / "ground_truth.json").read_text() == (again / "ground_truth.json").read_text()
    assert set(read_csd(other / "labels.csd").data) != set(a.data)


def test_regenerating_replaces_the_folder_and_unknown_size_is_a_config_error(tmp_path):
    out = tmp_path / "s"
    generate_sample(out, "tiny", seed=0, progress=False)
    (out / "stale.txt").write_text("x")
    generate_sample(out, "tiny", seed=0, progress=False)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temp folders left
    with pytest.raises(ConfigError, match="sample_size"):
        generate_sample(out, "huge")


@pytest.mark.slow
def test_default_size_is_mosi_scale_and_fast(tmp_path):
    t0 = time.perf_counter()
    summary = generate_sample(tmp_path / "d", "default", seed=0, progress=False)
    assert time.perf_counter() - t0 < 30
    assert summary["videos"] == 93 and 2000 <= summary["segments"] <= 2400
    lengths = [iv[-1, 1] for _, iv in read_csd(tmp_path / "d" / "words.csd").data.values()]
    assert 85 <= min(lengths) and max(lengths) <= 310
    assert 0.3 < summary["informative"]["acoustic"] < 0.5 and summary["informative"]["visual"] < 0.2
