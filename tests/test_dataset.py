"""Parquet -> tokenised, pre-collated tensors -> padded batches; the bucketed sampler."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from m3sa.data.features import META_KEYS
from m3sa.data.dataset import BucketBatchSampler, Ragged, iterate_batches, load_split, load_tokenizer, read_meta
from m3sa.errors import DataError
from tiny_features import DIMS, schema, write_features


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("random:tiny")


@pytest.fixture
def features(tmp_path):
    return write_features(tmp_path / "features", sizes=(24, 8, 8))


def test_ragged_pad_gathers_rows_and_masks_padding():
    values = torch.arange(10, dtype=torch.float32).reshape(5, 2)  # rows: [0,1] [2,3] [4,5] [6,7] [8,9]
    r = Ragged(torch.cat([values, torch.full((1, 2), -1.0)]), torch.tensor([0, 2, 2, 5]))  # lengths 2, 0, 3
    out, mask = r.pad(torch.tensor([2, 0, 1]))
    assert out.shape == (3, 3, 2)
    assert mask.tolist() == [[True, True, True], [True, True, False], [False, False, False]]
    assert out[0].tolist() == [[4, 5], [6, 7], [8, 9]]
    assert out[1].tolist() == [[0, 1], [2, 3], [-1, -1]]
    assert out[2].tolist() == [[-1, -1]] * 3


def test_tokenisation_word_index_and_truncation(tmp_path, tokenizer):
    root = write_features(tmp_path / "f", sizes=(2, 1, 1))
    table = pq.read_table(root / "train.parquet")
    words = [["unbelievably", "good", "movie"], ["the"] * 30]
    table = table.set_column(table.column_names.index("words"), "words", pa.array(words, pa.list_(pa.string())))
    for m in ("acoustic", "visual"):
        rows = [np.zeros((len(w), DIMS[m]), np.float32).tolist() for w in words]
        table = table.set_column(table.column_names.index(m), m, pa.array(rows, pa.list_(pa.list_(pa.float32()))))
        table = table.set_column(table.column_names.index(f"{m}_len"), f"{m}_len",
                                 pa.array([len(w) for w in words], pa.int32()))
    pq.write_table(table, root / "train.parquet")
    data = load_split(root, "train", tokenizer, max_tokens=12)
    batch = data.collate([0, 1])
    pieces = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert pieces[0] == "[CLS]" and "[SEP]" in pieces
    # every WordPiece of "unbelievably" points to word 0; specials and padding to -1
    wi = batch["word_index"][0].tolist()
    n_real = int(batch["attention_mask"][0].sum())
    assert wi[0] == -1 and wi[n_real - 1] == -1 and all(w == -1 for w in wi[n_real:])
    assert set(wi[1:n_real - 1]) == {0, 1, 2} and wi[1:n_real - 1] == sorted(wi[1:n_real - 1])
    assert sum(1 for w in wi if w == 0) == len(tokenizer.tokenize("unbelievably"))
    # the long segment is cut to max_tokens, still ends with [SEP]
    assert int(batch["attention_mask"][1].sum()) == 12 == batch["input_ids"].shape[1]
    assert tokenizer.convert_ids_to_tokens(int(batch["input_ids"][1, 11])) == "[SEP]"
    assert batch["word_index"][1].tolist() == [-1] + list(range(10)) + [-1]
    # acoustic/visual keep one row per word, independent of truncation
    assert batch["acoustic"].shape == (2, 30, DIMS["acoustic"])
    assert batch["acoustic_mask"].sum(1).tolist() == [3, 30]


def test_collate_shapes_types_and_values(features, tokenizer):
    data = load_split(features, "train", tokenizer, max_tokens=24)
    table = pq.read_table(features / "train.parquet")
    idx = [3, 0, 7]
    b = data.collate(idx)
    assert b["label"].dtype == torch.float32 and b["label"].tolist() == pytest.approx(
        [table.column("label")[i].as_py() for i in idx])
    assert b["index"].tolist() == idx
    assert b["input_ids"].dtype == torch.long and b["word_index"].dtype == torch.long
    assert b["input_ids"].shape == b["attention_mask"].shape == b["word_index"].shape
    for m in ("acoustic", "visual"):
        lens = [table.column(f"{m}_len")[i].as_py() for i in idx]
        assert b[m].shape == (3, max(lens), DIMS[m]) and b[m].dtype == torch.float32
        assert b[f"{m}_mask"].dtype == torch.bool and b[f"{m}_mask"].sum(1).tolist() == lens
        for j, i in enumerate(idx):
            expect = np.array(table.column(m)[i].as_py(), dtype=np.float32)
            assert np.array_equal(b[m][j, :lens[j]].numpy(), expect)
            assert not b[m][j, lens[j]:].any()
    assert data.segment_ids[0] == table.column("segment_id")[0].as_py()
    assert set(data.ground_truth) == {"language", "acoustic", "visual"}


def test_missing_modality_has_no_fields(tmp_path, tokenizer):
    root = write_features(tmp_path / "f", sizes=(6, 2, 2), modalities=("language", "acoustic"))
    b = load_split(root, "valid", tokenizer, 16).collate([0, 1])
    assert "visual" not in b and "acoustic" in b and "input_ids" in b


@pytest.mark.parametrize("column", ["words", "visual", "label"])
def test_missing_column_names_file_and_column(features, tokenizer, column):
    table = pq.read_table(features / "train.parquet").drop_columns([column])
    pq.write_table(table, features / "train.parquet")
    names = ", ".join(table.column_names)  # every column the file has, frame columns included
    with pytest.raises(DataError, match=rf"train\.parquet.*'{column}' is missing \(columns: {re.escape(names)}\)"):
        load_split(features, "train", tokenizer, 16)


def test_frame_rows_are_held_once_with_a_zero_padding_row(features, tokenizer):
    table = pq.read_table(features / "train.parquet")
    data = load_split(features, "train", tokenizer, 16)
    rows = np.concatenate([np.asarray(r, np.float32) for r in table.column("acoustic").to_pylist()])
    values = data.fields["acoustic"].values
    assert values.shape == (rows.shape[0] + 1, rows.shape[1]) and values.is_contiguous()
    np.testing.assert_array_equal(values[:-1].numpy(), rows)
    assert not values[-1].any()


def test_width_disagreeing_with_meta_names_segment(features, tokenizer):
    meta = json.loads((features / "meta.json").read_text())
    meta["dims"]["acoustic"] = 7
    (features / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"segment 'train000\[0\]'.*width 5.*dims.acoustic = 7"):
        load_split(features, "train", tokenizer, 16)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_feature_names_segment(features, tokenizer, bad):
    table = pq.read_table(features / "valid.parquet")
    rows = table.column("acoustic").to_pylist()
    rows[2][1][3] = bad  # segment 2, its second frame row
    table = table.set_column(table.column_names.index("acoustic"), "acoustic",
                             pa.array(rows, table.schema.field("acoustic").type))
    pq.write_table(table, features / "valid.parquet")
    ids = table.column("segment_id").to_pylist()
    with pytest.raises(DataError, match=rf"valid\.parquet: segment '{re.escape(ids[2])}': 'acoustic' holds 1 NaN/inf"):
        load_split(features, "valid", tokenizer, 16)


def test_row_groups_give_the_same_split_and_name_the_right_segment(features, tokenizer):
    whole = load_split(features, "train", tokenizer, 16)
    table = pq.read_table(features / "train.parquet")
    pq.write_table(table, features / "train.parquet", row_group_size=5)  # 24 segments: 5 row groups
    assert pq.ParquetFile(features / "train.parquet").num_row_groups == 5
    grouped = load_split(features, "train", tokenizer, 16)
    for m in ("acoustic", "visual"):
        torch.testing.assert_close(grouped.fields[m].values, whole.fields[m].values, rtol=0, atol=0)
        torch.testing.assert_close(grouped.fields[m].offsets, whole.fields[m].offsets, rtol=0, atol=0)
    rows = table.column("acoustic").to_pylist()
    rows[12] = [r[:3] for r in rows[12]]  # a segment of the third row group with 3-wide rows
    pq.write_table(table.set_column(table.column_names.index("acoustic"), "acoustic",
                                    pa.array(rows, table.schema.field("acoustic").type)),
                   features / "train.parquet", row_group_size=5)
    ids = table.column("segment_id").to_pylist()
    with pytest.raises(DataError, match=rf"segment '{re.escape(ids[12])}': 'acoustic' rows have width 3"):
        load_split(features, "train", tokenizer, 16)


def test_wrong_column_type_is_data_error(features, tokenizer):
    table = pq.read_table(features / "valid.parquet")
    table = table.set_column(table.column_names.index("visual"), "visual",
                             pa.array(["x"] * table.num_rows, pa.string()))
    pq.write_table(table, features / "valid.parquet")
    with pytest.raises(DataError, match=r"'visual' has type string"):
        load_split(features, "valid", tokenizer, 16)


def test_meta_problems(tmp_path):
    with pytest.raises(DataError, match="meta.json: not found"):
        read_meta(tmp_path)
    base = {k: {} for k in META_KEYS}
    (tmp_path / "meta.json").write_text(json.dumps({**base, "modalities": ["language", "smell"]}))
    with pytest.raises(DataError, match="modalities"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({**base, "modalities": ["language", "acoustic"], "dims": {}}))
    with pytest.raises(DataError, match="dims.acoustic"):
        read_meta(tmp_path)


def test_schema_helper_matches_contract():
    names = schema(("language", "acoustic", "visual")).names
    assert names[:7] == ["segment_id", "video_id", "split", "start", "end", "label", "words"]


# ---------------------------------------------------------------- sampler


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), bs=st.integers(1, 40), pool=st.integers(1, 5), seed=st.integers(0, 10),
       epoch=st.integers(0, 5), shuffle=st.booleans())
def test_batches_partition_the_split(n, bs, pool, seed, epoch, shuffle):
    lengths = np.random.default_rng(seed).integers(1, 50, n)
    s = BucketBatchSampler(lengths, bs, seed=seed, shuffle=shuffle, pool_batches=pool)
    s.set_epoch(epoch)
    batches = list(s)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(n))
    assert all(1 <= len(b) <= bs for b in batches)
    assert len(s) == len(batches)
    # pools are sorted by length: inside a batch the spread is no larger than the pool's
    assert batches == list(s)  # same (seed, epoch) -> same batches


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 200), bs=st.integers(2, 32), world=st.integers(2, 4), seed=st.integers(0, 5))
def test_ranks_split_each_global_batch(n, bs, world, seed):
    lengths = np.random.default_rng(seed).integers(1, 50, n)
    full = BucketBatchSampler(lengths, bs, seed=seed).global_batches()
    shards = [list(BucketBatchSampler(lengths, bs, seed=seed, num_replicas=world, rank=r)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    for k in range(len(shards[0])):
        union = sorted(i for s in shards for i in s[k])
        if len(full) == len(shards[0]):
            assert union == sorted(full[k].tolist())
        assert all(len(s[k]) >= 1 for s in shards) or len(union) < world


def test_epochs_reshuffle_and_bucketing_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, 1000)
    s = BucketBatchSampler(lengths, 20, seed=3, pool_batches=50)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(2)
    assert list(s) != e1
    padded = sum(len(b) * lengths[b].max() for b in e1)
    random_batches = np.array_split(rng.permutation(1000), 50)
    padded_random = sum(len(b) * lengths[b].max() for b in random_batches)
    assert padded < 0.7 * padded_random
    assert sum(lengths) / padded > 0.9  # under 10% padding


def test_iterate_batches_on_cpu_yields_every_batch(features, tokenizer):
    data = load_split(features, "valid", tokenizer, 16)
    batches = [[0, 1, 2], [3, 4], [5, 6, 7]]
    got = [b["index"].tolist() for b in iterate_batches(data, batches, torch.device("cpu"))]
    assert got == batches


SHARED_WORDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "mosi-real-trainvalid" / "CMU_MOSI_TimestampedWords.csd"
TRICKY = [["unbelievably", "good", "movie"], ["the"] * 300, [], ["naïve", "café", "😀", "don't", "U.S.A.", "1,000"],
          ["ＦＵＬＬＷＩＤＴＨ", "\u00a0", "a\u0301", "x" * 120], ["[SEP]", "[CLS]", "[PAD]", "[UNK]", "##ing"]]


@pytest.mark.parametrize("max_tokens", [128, 16, 3])
def test_tokenizer_file_encodes_like_transformers(max_tokens):
    """load_word_tokenizer runs tokenizer.json itself: ids and word indices equal the transformers
    fast tokenizer's on hand-made edge cases and, when ../shared has it, every real MOSI segment."""
    from m3sa.tokenization import WordTokenizer, load_word_tokenizer

    ours = load_word_tokenizer("packaged:all-MiniLM-L6-v2")
    theirs = WordTokenizer.wrap(load_tokenizer("packaged:all-MiniLM-L6-v2"))
    assert not ours._wraps and ours.pad_token_id == theirs.pad_token_id == 0
    segments = list(TRICKY)
    if SHARED_WORDS.is_file() and max_tokens == 128:
        import h5py

        with h5py.File(SHARED_WORDS, "r") as f:
            data = f["words"]["data"]
            segments += [[w.decode() if isinstance(w, bytes) else str(w) for w in np.asarray(data[k]["features"]).ravel()]
                         for k in sorted(data)]
    assert ours.encode(segments, max_tokens) == theirs.encode(segments, max_tokens)


def test_unreadable_tokenizer_file_is_one_line(tmp_path):
    from m3sa.errors import ModelError
    from m3sa.tokenization import WordTokenizer

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelError) as err:
        WordTokenizer.from_file(tmp_path / "tokenizer.json")
    assert "\n" not in str(err.value) and "tokenizer.json" in str(err.value)


@given(st.lists(st.one_of(st.none(), st.floats(width=32, allow_nan=False)), max_size=40), st.integers(0, 5),
       st.sampled_from(["float32", "float64", "int32", "int64"]))
@settings(max_examples=60, deadline=None)
def test_numpy_view_equals_arrow_to_numpy(values, start, kind):
    """dataset._numpy (no pandas import) reads what Array.to_numpy reads, slices and nulls included."""
    from m3sa.data.dataset import _numpy

    if kind.startswith("int"):
        values = [None if v is None else int(max(min(v, 1e6), -1e6)) for v in values]
    arr = pa.array(values, type=getattr(pa, kind)())[start:]
    np.testing.assert_array_equal(_numpy(arr), arr.to_numpy(zero_copy_only=False))
    chunked = pa.chunked_array([arr, arr])
    np.testing.assert_array_equal(_numpy(chunked), chunked.to_numpy())


def test_loading_a_split_imports_neither_pandas_nor_transformers(tmp_path):
    import subprocess
    import sys

    features = write_features(tmp_path / "features", sizes=(6, 2, 2))
    code = (f"import sys; from m3sa.data.dataset import load_split, load_word_tokenizer; "
            f"load_split({str(features)!r}, 'train', load_word_tokenizer('random:tiny'), 16); "
            "bad = [m for m in ('pandas', 'transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_only_bert_folders_take_the_tokenizer_file_path(tmp_path):
    """Other model types keep transformers' tokenizer (their pad token and pre-tokenisation differ)."""
    import shutil

    from m3sa.tokenization import load_word_tokenizer, packaged_path

    folder = tmp_path / "enc"
    shutil.copytree(packaged_path("all-MiniLM-L6-v2"), folder)
    assert not load_word_tokenizer(str(folder))._wraps
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    assert load_word_tokenizer(str(folder))._wraps


def test_tokenizer_file_without_pad_token_is_one_line(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    from m3sa.errors import ModelError
    from m3sa.tokenization import WordTokenizer

    Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ModelError) as err:
        WordTokenizer.from_file(tmp_path / "tokenizer.json")
    assert "\n" not in str(err.value) and "[PAD]" in str(err.value)
