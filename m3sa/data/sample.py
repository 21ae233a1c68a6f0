"""The embedded MOSI-like dataset: a seeded generator writing CSD files.

Per video it writes a words sequence (English-like sentences whose sentiment a pretrained
English encoder can read, ``sp`` silences between some words, 10 ms word timing like
forced alignment), an acoustic stream (74-d at 100 Hz, with a few -inf/NaN values as
COVAREP has), a visual stream (47-d at 30 Hz; 35-d for the ``mosei`` size) and one opinion
label per segment in [-3, 3] (the mean of 3-5 integer annotator scores, so multiples of
1/3, 1/4 or 1/5, some exactly 0; float32 intervals as the genuine files store them).

Planted sentiment, recorded per segment in ``ground_truth.json``:
- language: always informative (the sentence's polarity and intensity follow the label
  plus a little noise);
- acoustic: informative for about 40% of the segments (a few dimensions shift with the
  label over the segment's frames); elsewhere the same dimensions shift with an
  independent random score, i.e. noise with the same marginal distribution;
- visual: the same scheme, informative for about 10% of the segments.

Files (docs/architecture.md): ``words.csd``, ``acoustic.csd``, ``visual.csd``,
``labels.csd``, ``folds.json``, ``ground_truth.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from m3sa.atomic import os_reason
from m3sa.data.csd import csd_writer, words_features
from m3sa.errors import ConfigError, OutputError

log = logging.getLogger(__name__)

FILES = {"language": "words.csd", "acoustic": "acoustic.csd", "visual": "visual.csd", "labels": "labels.csd"}
ROOTS = {"language": "words", "acoustic": "COVAREP", "visual": "FACET_4.2", "labels": "Opinion Segment Labels"}
ACOUSTIC_DIM, ACOUSTIC_HZ = 74, 100
VISUAL_HZ = 30
#: Feature dimensions that carry the planted score (shift = SHIFT * score).
ACOUSTIC_SIGNAL_DIMS = (2, 3, 4, 5, 6, 7)
VISUAL_SIGNAL_DIMS = (1, 2, 3, 4)
SHIFT = 0.4


@dataclass(frozen=True)
class SampleSpec:
    """Size of a generated dataset."""

    videos: int
    duration: tuple[float, float]  # video length range, seconds
    seconds_per_segment: float  # video time per opinion segment, on average
    folds: tuple[int, int, int]  # videos in train / valid / test
    visual_dim: int = 47
    label_columns: int = 1  # MOSEI label rows: sentiment + six emotions
    p_acoustic: float = 0.4  # share of segments whose acoustic stream is informative
    p_visual: float = 0.1


SIZES: dict[str, SampleSpec] = {
    "tiny": SampleSpec(videos=10, duration=(25.0, 45.0), seconds_per_segment=5.8, folds=(6, 1, 3)),
    "default": SampleSpec(videos=93, duration=(90.0, 300.0), seconds_per_segment=8.25, folds=(52, 10, 31)),
    "large": SampleSpec(videos=372, duration=(90.0, 300.0), seconds_per_segment=8.25, folds=(208, 40, 124)),
    "mosei": SampleSpec(videos=3227, duration=(35.0, 80.0), seconds_per_segment=8.0, folds=(2249, 300, 678),
                        visual_dim=35, label_columns=7),
}

# ----------------------------------------------------------------------------- language

_POS_ADJ = ("good", "great", "nice", "fun", "enjoyable", "funny", "wonderful", "excellent", "amazing",
            "brilliant", "fantastic", "beautiful", "charming", "entertaining", "impressive", "clever",
            "lovely", "awesome", "delightful", "touching", "sweet", "solid", "pleasant", "hilarious")
_NEG_ADJ = ("bad", "boring", "awful", "terrible", "horrible", "dull", "stupid", "poor", "weak", "annoying",
            "disappointing", "lame", "ridiculous", "pointless", "painful", "mediocre", "bland", "messy",
            "silly", "predictable", "confusing", "slow", "ugly", "forgettable")
_POS_VERB = ("loved", "liked", "enjoyed", "adored", "appreciated")
_NEG_VERB = ("hated", "disliked", "regretted", "resented")
_STRONG = ("really", "very", "so", "extremely", "absolutely", "incredibly", "totally")
_MILD = ("pretty", "quite", "fairly", "somewhat", "a bit", "kind of")
_NOUN = ("movie", "film", "story", "plot", "acting", "ending", "music", "cast", "script", "dialogue",
         "characters", "soundtrack", "director", "scenes", "humor", "pacing", "camera work", "effects")
_NEUTRAL = ("okay", "fine", "average", "alright", "decent enough", "normal")
_FILLER = (
    "so i watched this movie last weekend", "um", "uh", "you know", "and", "i mean", "well",
    "the story is about a family in a small town", "it came out last summer", "i saw it with my brother",
    "there is a scene in the middle", "the main actor plays a detective", "it is about two hours long",
    "my friend told me about it", "i went to the theater on friday", "it is based on a book",
    "the movie is set in new york", "there are a lot of characters", "so yeah", "let me tell you",
    "basically", "at first", "then", "i think", "anyway", "and so", "the director also made another one",
)


def _clause(rng: np.random.Generator, polarity: int, level: int) -> list[str]:
    """One opinion clause; polarity +1/-1, level 1 (mild) .. 3 (strong)."""
    adj = _POS_ADJ if polarity > 0 else _NEG_ADJ
    opp = _NEG_ADJ if polarity > 0 else _POS_ADJ
    noun = str(rng.choice(_NOUN))
    intens = str(rng.choice(_STRONG)) if level >= 2 else str(rng.choice(_MILD))
    pick = rng.integers(0, 6)
    if level == 1 and rng.random() < 0.15:  # negation, sparingly: "not very good" reads mildly negative
        text = f"the {noun} was not {rng.choice(('very', 'that', 'really'))} {rng.choice(opp)}"
    elif pick == 0:
        text = f"the {noun} was {intens} {rng.choice(adj)}"
    elif pick == 1:
        verb = _POS_VERB if polarity > 0 else _NEG_VERB
        text = f"i {'really ' if level >= 2 else ''}{rng.choice(verb)} the {noun}"
    elif pick == 2:
        text = f"it was {intens} {rng.choice(adj)}"
    elif pick == 3:
        text = f"i thought the {noun} {'were' if noun.endswith('s') else 'was'} {intens} {rng.choice(adj)}"
    elif pick == 4:
        text = f"{rng.choice(adj)} {noun}" if level == 1 else f"{intens} {rng.choice(adj)} {noun} {rng.choice(adj)}"
    else:
        text = f"overall {intens} {rng.choice(adj)}"
    if level == 3 and rng.random() < 0.5:
        text += f" {rng.choice(('one of the best' if polarity > 0 else 'one of the worst', 'i mean it', 'seriously'))}"
    return text.split()


def sentence(rng: np.random.Generator, score: float) -> list[str]:
    """Words of a segment whose readable sentiment follows ``score`` in [-3, 3]."""
    words: list[str] = []
    if rng.random() < 0.5:
        words += str(rng.choice(_FILLER)).split()
    mag = abs(score)
    if mag < 0.5:
        words += f"it was {rng.choice(_NEUTRAL)}".split()
        if rng.random() < 0.5:
            words += str(rng.choice(_FILLER)).split()
    else:
        level = 1 if mag < 1.4 else 2 if mag < 2.3 else 3
        pol = 1 if score > 0 else -1
        for _ in range({1: 1, 2: int(rng.integers(1, 3)), 3: int(rng.integers(2, 4))}[level]):
            if words:
                words.append(str(rng.choice(("and", "and", "but also", "plus")) if rng.random() < 0.7 else "um"))
            words += _clause(rng, pol, level)
    if rng.random() < 0.3:
        words += str(rng.choice(_FILLER)).split()
    return [w for part in words for w in part.split()]


def _scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """MOSI-like labels: the mean of 3-5 integer annotator scores around a bimodal latent."""
    latent = np.where(rng.random(n) < 0.5, 1.0, -1.0) * np.abs(rng.normal(1.3, 0.9, n))
    raters = rng.choice([3, 4, 5], size=n, p=[0.3, 0.1, 0.6])
    votes = np.clip(np.rint(latent[:, None] + rng.normal(0.0, 0.8, (n, 5))), -3, 3)  # (n, 5)
    votes[np.arange(5)[None, :] >= raters[:, None]] = 0.0
    return votes.sum(axis=1) / raters  # (n,)


def _video_ids(rng: np.random.Generator, n: int) -> list[str]:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    ids: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        vid = "".join(rng.choice(alphabet, 11))
        if vid not in ids:
            ids.add(vid)
            out.append(vid)
    return out


# ----------------------------------------------------------------------------- one video

@dataclass
class _Video:
    words: list[str]
    word_cs: np.ndarray  # (W, 2) int, centiseconds
    seg_cs: np.ndarray  # (S, 2) int
    labels: np.ndarray  # (S, C) float32
    gt_acoustic: np.ndarray  # (S,) bool
    gt_visual: np.ndarray  # (S,) bool
    acoustic: np.ndarray  # (N, 74) float32
    visual: np.ndarray  # (M, dv) float32


def _timeline(rng: np.random.Generator, scores: np.ndarray, duration: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Words with 10 ms timing and the segments' intervals (centiseconds)."""
    segs = [sentence(rng, float(s) + rng.normal(0.0, 0.45)) for s in scores]

    def durations(words: list[str]) -> list[int]:
        return [int(max(8, 12 + 5 * len(w) + rng.integers(-4, 10))) for w in words]

    speech = sum(sum(durations(w)) for w in segs) * 1.15
    spare = max(0.0, duration * 100 - speech)
    touching = rng.random(len(segs)) < 0.35
    touching[0] = False
    gaps = rng.dirichlet(np.ones(int((~touching).sum()) + 1)) * spare  # centiseconds per gap
    gap_iter = iter(gaps[:-1])
    words: list[str] = []
    cs: list[int] = []
    seg_cs = np.zeros((len(segs), 2), dtype=np.int64)
    t = 0

    def emit(word: str, dur: int) -> None:
        nonlocal t
        words.append(word)
        cs.append(t)
        t += dur

    for k, seg in enumerate(segs):
        if not touching[k]:
            gap = int(next(gap_iter))
            end = t + gap
            while end - t > 150:  # non-opinion speech and silences between segments
                if rng.random() < 0.5:
                    emit("sp", int(rng.integers(20, 120)))
                filler = str(rng.choice(_FILLER)).split()
                for w, d in zip(filler, durations(filler)):
                    emit(w, d)
            emit("sp", max(5, end - t))
        seg_cs[k, 0] = t
        for i, (w, d) in enumerate(zip(seg, durations(seg))):
            if i and rng.random() < 0.12:
                emit("sp", int(rng.integers(5, 60)))
            emit(w, d)
        seg_cs[k, 1] = t
    emit("sp", int(max(20, gaps[-1])))
    starts = np.array(cs, dtype=np.int64)
    word_cs = np.stack([starts, np.append(starts[1:], t)], axis=1)  # (W, 2)
    return words, word_cs, seg_cs


def _frames(rng: np.random.Generator, n: int, dim: int, hz: int, seg_cs: np.ndarray, target: np.ndarray,
            signal_dims: tuple[int, ...], base: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(n, dim) float32 noise around per-dimension offsets, shifted by SHIFT * target per segment."""
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x *= base[1]
    x += base[0] + rng.normal(0.0, 0.3, dim).astype(np.float32) * base[1]  # speaker offset
    lo = np.floor(seg_cs[:, 0] * hz / 100).astype(np.int64)
    hi = np.minimum(np.ceil(seg_cs[:, 1] * hz / 100).astype(np.int64), n)
    cnt = np.maximum(hi - lo, 0)
    idx = np.arange(cnt.sum()) + np.repeat(lo - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt)
    shift = np.zeros(n, dtype=np.float32)
    shift[idx] = np.repeat(SHIFT * target, cnt)
    cols = list(signal_dims)
    x[:, cols] += shift[:, None] * base[1][cols]
    return x


def _acoustic_base(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """COVAREP-like offsets and scales: F0 around 150 Hz, voicing flag, mixed-scale rest."""
    g = np.random.default_rng(12345)
    offset = g.normal(0.0, 2.0, dim).astype(np.float32)
    scale = np.exp(g.uniform(-2.0, 1.5, dim)).astype(np.float32)
    offset[0], scale[0] = 150.0, 25.0
    offset[1], scale[1] = 0.6, 0.3
    return offset, scale


def _visual_base(dim: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(54321)
    return g.normal(0.0, 1.0, dim).astype(np.float32), np.exp(g.uniform(-1.0, 1.0, dim)).astype(np.float32)


def _video(seed: np.random.SeedSequence, spec: SampleSpec) -> _Video:
    """One video: timeline, labels, planted streams, ground truth (its own seeded stream)."""
    rng = np.random.default_rng(seed)
    duration = float(rng.uniform(*spec.duration))
    n_seg = max(1, int(round(duration / spec.seconds_per_segment * rng.uniform(0.85, 1.15))))
    scores = _scores(rng, n_seg)
    words, word_cs, seg_cs = _timeline(rng, scores, duration)
    end_cs = int(word_cs[-1, 1])
    gt_a = rng.random(n_seg) < spec.p_acoustic
    gt_v = rng.random(n_seg) < spec.p_visual
    decoy = _scores(rng, 2 * n_seg)
    target_a = np.where(gt_a, scores, decoy[:n_seg]).astype(np.float32)
    target_v = np.where(gt_v, scores, decoy[n_seg:]).astype(np.float32)
    n_a = int(np.ceil(end_cs * ACOUSTIC_HZ / 100))
    n_v = int(np.ceil(end_cs * VISUAL_HZ / 100))
    acoustic = _frames(rng, n_a, ACOUSTIC_DIM, ACOUSTIC_HZ, seg_cs, target_a, ACOUSTIC_SIGNAL_DIMS,
                       _acoustic_base(ACOUSTIC_DIM))
    # COVAREP's -inf (log of zero energy) and NaN (failed estimates), a few per video
    k = max(1, acoustic.size // 50_000)
    acoustic.reshape(-1)[rng.integers(0, acoustic.size, k)] = -np.inf
    acoustic.reshape(-1)[rng.integers(0, acoustic.size, k)] = np.nan
    visual = _frames(rng, n_v, spec.visual_dim, VISUAL_HZ, seg_cs, target_v, VISUAL_SIGNAL_DIMS,
                     _visual_base(spec.visual_dim))
    labels = np.zeros((n_seg, spec.label_columns), dtype=np.float32)
    labels[:, 0] = scores
    if spec.label_columns > 1:  # MOSEI: happiness, sadness, anger, surprise, disgust, fear in [0, 3]
        labels[:, 1:] = np.clip(rng.gamma(0.6, 0.6, (n_seg, spec.label_columns - 1)), 0, 3)
    return _Video(words, word_cs, seg_cs, labels, gt_a, gt_v, acoustic, visual)


def _intervals(n: int, hz: int) -> np.ndarray:
    i = np.arange(n + 1, dtype=np.float64)
    return np.stack([i[:-1] / hz, i[1:] / hz], axis=1)  # (n, 2)


def _metadata(description: str, dims: list[str]) -> dict[str, Any]:
    return {
        "computational sequence description": description,
        "dimension names": dims,
        "computational sequence version": "1.0",
        "alignment compatible": True,
        "dataset name": "M3SA embedded sample",
        "dataset version": "1.0",
        "creator": "m3sa.data.sample",
        "contact": "none",
        "featureset bib citation": "generated",
        "dataset bib citation": "generated",
    }


def generate_sample(out_dir: str | Path, size: str = "default", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Write the embedded dataset of ``size`` (tiny | default | large | mosei) into ``out_dir``.

    The directory is replaced as a whole, atomically (built beside it, then renamed).
    Returns a summary: videos, segments, frames and the share of informative segments.
    """
    if size not in SIZES:
        raise ConfigError(f"params: 'data.sample_size' = {size!r} is not allowed; choose one of: {', '.join(SIZES)}")
    spec = SIZES[size]
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as err:
        raise OutputError(f"{out_dir.parent}: cannot create the sample directory ({os_reason(err)})") from None
    root = np.random.SeedSequence(seed)
    master = np.random.default_rng(root.spawn(1)[0])
    videos = sorted(_video_ids(master, spec.videos))
    seeds = root.spawn(spec.videos + 1)[1:]
    ground_truth: dict[str, dict[str, bool]] = {}
    n_seg = n_frames = 0
    try:
        with csd_writer(tmp / FILES["language"], ROOTS["language"],
                        _metadata("Words, one per row; sp = silence", ["word"])) as w_words, \
             csd_writer(tmp / FILES["acoustic"], ROOTS["acoustic"],
                        _metadata("COVAREP-like acoustic features, 100 Hz",
                                  [f"acoustic_{i:02d}" for i in range(ACOUSTIC_DIM)])) as w_ac, \
             csd_writer(tmp / FILES["visual"], ROOTS["visual"],
                        _metadata("Facet-like visual features, 30 Hz",
                                  [f"visual_{i:02d}" for i in range(spec.visual_dim)])) as w_vi, \
             csd_writer(tmp / FILES["labels"], ROOTS["labels"],
                        _metadata("Sentiment score per opinion segment",
                                  ["sentiment score"] + ["happiness", "sadness", "anger", "surprise", "disgust",
                                                         "fear"][: spec.label_columns - 1])) as w_lab:
            for vid, s in tqdm(list(zip(videos, seeds)), desc=f"sample[{size}]", unit="video",
                               disable=None if progress else True, leave=False):
                v = _video(s, spec)
                w_words.add(vid, words_features(v.words), v.word_cs / 100.0)
                w_ac.add(vid, v.acoustic, _intervals(len(v.acoustic), ACOUSTIC_HZ))
                w_vi.add(vid, v.visual, _intervals(len(v.visual), VISUAL_HZ))
                w_lab.add(vid, v.labels, (v.seg_cs / 100.0).astype(np.float32))
                for k in range(len(v.labels)):
                    ground_truth[f"{vid}[{k}]"] = {"language": True, "acoustic": bool(v.gt_acoustic[k]),
                                                   "visual": bool(v.gt_visual[k])}
                n_seg += len(v.labels)
                n_frames += len(v.acoustic)
        order = master.permutation(spec.videos)
        n_tr, n_va, _ = spec.folds
        folds = {"train": sorted(videos[i] for i in order[:n_tr]),
                 "valid": sorted(videos[i] for i in order[n_tr:n_tr + n_va]),
                 "test": sorted(videos[i] for i in order[n_tr + n_va:])}
        (tmp / "folds.json").write_text(json.dumps(folds, indent=1) + "\n")
        (tmp / "ground_truth.json").write_text(json.dumps(ground_truth, indent=0) + "\n")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{out_dir}: cannot write the sample ({os_reason(err)})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    gt = list(ground_truth.values())
    summary = {"size": size, "seed": seed, "videos": spec.videos, "segments": n_seg,
               "acoustic_frames": n_frames, "hours": round(n_frames / ACOUSTIC_HZ / 3600, 2),
               "informative": {m: round(float(np.mean([g[m] for g in gt])), 3) for m in ("acoustic", "visual")}}
    log.info("sample %s: %d videos, %d segments, %.2f h of video -> %s", size, spec.videos, n_seg,
             summary["hours"], out_dir)
    return summary
