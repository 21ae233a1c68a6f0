"""Typed configuration, validated once at the edge.

``params.yaml`` (plus ``--set dotted.key=value`` overrides, which mean the same as
``dvc exp run -S``) is parsed into the :class:`Config` dataclass tree below. Unknown keys,
wrong types and values outside an allowed set raise :class:`~m3sa.errors.ConfigError`
naming the key and what is allowed, before any work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.constructor import DuplicateKeyError

from m3sa.errors import ConfigError

MODALITIES = ("language", "acoustic", "visual")


@dataclass(frozen=True)
class CSDFiles:
    """File names inside ``data.csd_dir``; ``None`` when a dataset lacks that stream."""

    words: Optional[str] = "CMU_MOSI_TimestampedWords.csd"
    acoustic: Optional[str] = "CMU_MOSI_COVAREP.csd"
    visual: Optional[str] = "CMU_MOSI_Visual_Facet_41.csd"
    labels: str = "CMU_MOSI_Opinion_Labels.csd"


@dataclass(frozen=True)
class DataConfig:
    source: Literal["sample", "csd", "mmsa", "mag"] = "sample"
    pickle: str = "data/sample"
    sample_size: Literal["tiny", "default", "large", "mosei"] = "default"
    sample_seed: int = 0
    sample_dir: str = "data/sample"
    csd_dir: str = "data/sample"
    files: CSDFiles = field(default_factory=CSDFiles)
    folds: str = "mosi"
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    label_column: int = 0
    align: Literal["words", "none"] = "words"
    max_words: int = 50
    max_frames: int = 500
    downsample: int = 1
    on_missing: Literal["drop", "error"] = "drop"
    nonfinite_value: float = 0.0
    standardize: bool = True
    features_dir: str = "data/features"


# ------------------------------------------------------------- model families

@dataclass(frozen=True)
class TFNConfig:
    """TFN (Zadeh et al. 2017): output width of each modality's subnetwork."""

    hidden: int = 32


@dataclass(frozen=True)
class LMFConfig:
    """LMF (Liu et al. 2018): rank of the modality-specific low-rank factors."""

    rank: int = 4


@dataclass(frozen=True)
class MulTConfig:
    """MulT (Tsai et al. 2019): layers of each cross-modal and self-attention transformer."""

    layers: int = 1


@dataclass(frozen=True)
class MAGConfig:
    """MAG-BERT (Rahman et al. 2020): the norm rule's beta and the gate's position."""

    beta: float = 1.0
    layer: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """``model.name`` and M3SA's knobs (its ablations, late fusion and text only share the
    encoders, head and fusion); each Table 1 baseline's own knobs sit in its section."""

    name: Literal["m3sa", "late_fusion", "text_only", "ef_lstm", "lf_lstm", "tfn", "lmf", "mult", "mag_bert"] = "m3sa"
    text_encoder: str = "packaged:all-MiniLM-L6-v2"
    max_tokens: int = 64
    dim: int = 64
    kernel_language: int = 1
    kernel_acoustic: int = 3
    kernel_visual: int = 3
    transformer_layers: int = 1
    transformer_heads: int = 4
    dropout: float = 0.1
    head_hidden: int = 64
    filter: Literal["soft", "hard", "none"] = "soft"
    filter_hidden: int = 32
    baseline_embedding: bool = True
    modulation: bool = True
    modulation_norm: Literal["none", "batch_mean"] = "none"
    modulation_eps: float = 1e-6
    fusion: Literal["add", "concat", "tensor", "graph"] = "add"
    # Training recipe of the modality filter (docs/filter.md): "paper" is eq. 14-21 as
    # written; "default" the project's recipe. The knobs typed Optional below are
    # recipe-governed: None means "the recipe's value" and is resolved by resolve_recipe().
    recipe: Literal["default", "paper"] = "default"
    soft_lambda: Optional[float] = None
    soft_lambda_warmup_epochs: int = 0
    filter_shared: Optional[bool] = None
    filter_init_keep: Optional[float] = None
    filter_init_std: float = 0.001
    hard_beta: float = 2.0 / 3.0
    hard_gamma: float = -0.1
    hard_zeta: float = 1.1
    # Comparison systems of the paper's Table 1 (docs/baselines.md), one section each.
    tfn: TFNConfig = field(default_factory=TFNConfig)
    lmf: LMFConfig = field(default_factory=LMFConfig)
    mult: MulTConfig = field(default_factory=MulTConfig)
    mag: MAGConfig = field(default_factory=MAGConfig)

    def __post_init__(self) -> None:
        _fill_from_recipe(self, "model", self.recipe)

    def with_recipe(self, recipe: str) -> "ModelConfig":
        """This config under ``recipe``, every recipe-governed knob reset to that recipe's value
        (``dataclasses.replace(cfg, recipe=...)`` alone keeps the old recipe's filled values)."""
        return dataclasses.replace(self, recipe=recipe, **{k: None for k in RECIPES[recipe]["model"]})


@dataclass(frozen=True)
class TrainConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    lr_text: float = 5e-5
    optimizer: Literal["adam", "adamw"] = "adamw"
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    penalty_weight: Optional[float] = None
    sparsity_weight: Optional[float] = None
    schedule: Literal["constant", "linear"] = "linear"
    warmup_ratio: float = 0.1
    patience: int = 3
    select_metric: Literal["mae", "corr", "acc2_non0", "f1_non0", "acc7"] = "mae"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    padding: Literal["auto", "batch", "buckets"] = "auto"
    nproc: int = 1
    num_threads: int = 0
    max_batches: int = 0
    models_dir: str = "models"
    live_dir: str = "dvclive"


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = 64
    robustness: bool = True


@dataclass(frozen=True)
class ReportConfig:
    title: str = "M3SA run report"
    dpi: int = 110
    experiments: str = "results/experiments.json"


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        # the train section's recipe-governed loss weights follow the model's recipe
        object.__setattr__(self, "train", dataclasses.replace(self.train))
        _fill_from_recipe(self.train, "train", self.model.recipe)

    def with_recipe(self, recipe: str) -> "Config":
        """This config under ``recipe`` (model and train knobs reset to the recipe's values)."""
        train = dataclasses.replace(self.train, **{k: None for k in RECIPES[recipe]["train"]})
        return dataclasses.replace(self, model=self.model.with_recipe(recipe), train=train)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able nested dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def digest(self) -> str:
        """Short stable hash of the resolved parameters."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# ---------------------------------------------------------------- recipes

#: The recipe-governed knobs and their values per recipe (docs/filter.md, "Deviations").
#: ``paper``: eq. 14-21 as written, one filter network shared by the modalities, logits
#: near 0 at the start, lambda = 1000, penalty l_p at weight 0.1, no sparsity prior.
#: ``default``: one filter network per modality, gates that start open (keep 0.9),
#: lambda = 1, l_p at weight 0.01, and the expected-L0 sparsity prior of Louizos et al.
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "model": {"soft_lambda": 1000.0, "filter_shared": True, "filter_init_keep": 0.5},
        "train": {"penalty_weight": 0.1, "sparsity_weight": 0.0},
    },
    "default": {
        "model": {"soft_lambda": 1.0, "filter_shared": False, "filter_init_keep": 0.9},
        "train": {"penalty_weight": 0.01, "sparsity_weight": 0.05},
    },
}


def _fill_from_recipe(node: Any, section: str, recipe: str) -> None:
    """Set every recipe-governed knob of ``node`` left at None to ``recipe``'s value (explicit values win).

    Called from the dataclasses' ``__post_init__``, so a config built any way is resolved.
    """
    if recipe not in RECIPES:
        raise ConfigError(f"params: 'model.recipe' = {recipe!r} is not allowed; choose one of: {', '.join(RECIPES)}")
    for key, value in RECIPES[recipe][section].items():
        if getattr(node, key) is None:
            object.__setattr__(node, key, value)


# ---------------------------------------------------------------- validation

_RANGES: dict[str, tuple[float | None, float | None]] = {
    "data.sample_seed": (0, None),
    "data.split_seed": (0, None),
    "data.max_words": (1, None),
    "data.max_frames": (1, None),
    "data.downsample": (1, None),
    "data.label_column": (0, None),
    "model.max_tokens": (2, None),
    "model.dim": (1, None),
    "model.kernel_language": (1, None),
    "model.kernel_acoustic": (1, None),
    "model.kernel_visual": (1, None),
    "model.transformer_layers": (0, None),
    "model.transformer_heads": (1, None),
    "model.dropout": (0.0, 0.99),
    "model.head_hidden": (1, None),
    "model.filter_hidden": (1, None),
    "model.modulation_eps": (0.0, None),
    "model.soft_lambda": (0.0, None),
    "model.soft_lambda_warmup_epochs": (0, None),
    "model.filter_init_std": (0.0, None),
    "model.filter_init_keep": (1e-6, 1.0 - 1e-6),
    "model.hard_beta": (1e-6, None),
    "model.tfn.hidden": (1, None),
    "model.lmf.rank": (1, None),
    "model.mult.layers": (1, None),
    "model.mag.beta": (0.0, None),
    "model.mag.layer": (0, None),
    "train.epochs": (1, None),
    "train.batch_size": (1, None),
    "train.lr": (0.0, None),
    "train.lr_text": (0.0, None),
    "train.weight_decay": (0.0, None),
    "train.grad_clip": (0.0, None),
    "train.penalty_weight": (0.0, None),
    "train.sparsity_weight": (0.0, None),
    "train.warmup_ratio": (0.0, 1.0),
    "train.patience": (0, None),
    "train.nproc": (1, None),
    "train.num_threads": (0, None),
    "train.max_batches": (0, None),
    "evaluate.batch_size": (1, None),
    "report.dpi": (30, 600),
}


_YAML12_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "list"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against annotation ``tp``; return it in canonical form."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"params: '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"params: '{key}' = {value!r} is not allowed; choose one of: "
                + ", ".join(str(a) for a in allowed)
            )
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        last: ConfigError | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as err:
                last = err
        assert last is not None
        raise last
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params: '{key}' must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
            if not items:
                raise ConfigError(f"params: '{key}' must not be empty")
            return tuple(items)
        if len(value) != len(args):
            raise ConfigError(f"params: '{key}' must have {len(args)} items, got {len(value)}")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"params: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML12_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 (PyYAML) reads 1e-3 as a string; YAML 1.2 and DVC read a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"params: '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"params: '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"params: '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"params: '{key}' has an unsupported type {tp}")  # pragma: no cover


def _build(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(
            f"params: unknown key '{prefix}{unknown[0]}'; known keys under "
            f"'{prefix.rstrip('.') or '<root>'}': {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name in raw:
            key = prefix + name
            value = _coerce(key, raw[name], hints[name])
            lo, hi = _RANGES.get(key, (None, None))
            if value is not None and (lo is not None and value < lo or hi is not None and value > hi):
                raise ConfigError(f"params: '{key}' = {value!r} is out of range [{lo}, {hi if hi is not None else 'inf'}]")
            kwargs[name] = value
    return cls(**kwargs)


#: String keys that name a file, folder or encoder: an empty value would silently mean the
#: current directory.
_NON_EMPTY = ("data.sample_dir", "data.csd_dir", "data.pickle", "data.folds", "data.features_dir", "data.files.labels",
              "model.text_encoder", "train.models_dir", "train.live_dir", "report.experiments")


def _check_semantics(cfg: Config) -> None:
    for key in _NON_EMPTY:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if not node.strip():
            raise ConfigError(f"params: '{key}' must not be empty")
    fr = cfg.data.split_fractions
    if any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"params: 'data.split_fractions' must be 3 non-negative numbers summing to 1, got {list(fr)}")
    if cfg.data.files.words is None and cfg.data.files.acoustic is None and cfg.data.files.visual is None:
        raise ConfigError("params: 'data.files' names no modality; set at least one of words, acoustic, visual")
    if cfg.model.dim % cfg.model.transformer_heads:
        raise ConfigError(
            f"params: 'model.dim' ({cfg.model.dim}) must be divisible by 'model.transformer_heads' "
            f"({cfg.model.transformer_heads})"
        )
    if len(set(cfg.train.seeds)) != len(cfg.train.seeds):
        raise ConfigError(f"params: 'train.seeds' has duplicates: {list(cfg.train.seeds)}")
    if any(s < 0 for s in cfg.train.seeds):
        raise ConfigError(f"params: 'train.seeds' must be integers >= 0, got {list(cfg.train.seeds)}")
    if not cfg.model.hard_gamma < 0.0 < 1.0 < cfg.model.hard_zeta:
        raise ConfigError(f"params: the Hard Concrete stretch needs model.hard_gamma < 0 < 1 < model.hard_zeta, "
                          f"got {cfg.model.hard_gamma} and {cfg.model.hard_zeta}")


def _yaml_load(text: str) -> Any:
    """YAML 1.2 (core schema), as DVC reads params.yaml and ``-S`` values: ``010`` is 10,
    ``yes`` a string; a key given twice in one mapping is an error, not a silent override."""
    return YAML(typ="safe", pure=True).load(text)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key part")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML ({err.__class__.__name__})") from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with every ``dotted.key=value`` override applied."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = nxt
        node[path[-1]] = value
    return out


#: Keys of earlier versions that moved into a model family's section: old -> (section, key).
MOVED_MODEL_KEYS = {"tfn_hidden": ("tfn", "hidden"), "lmf_rank": ("lmf", "rank"), "mult_layers": ("mult", "layers"),
                    "mag_beta": ("mag", "beta"), "mag_layer": ("mag", "layer")}


def _moved_keys(raw: dict[str, Any], migrate: bool) -> dict[str, Any]:
    """``raw`` with the model keys of earlier versions moved to their sections (``migrate``,
    for stored configs) or a :class:`ConfigError` naming the new key (params)."""
    model = raw.get("model")
    if not isinstance(model, dict):
        return raw  # reported by validation
    old = [k for k in MOVED_MODEL_KEYS if k in model]
    if not old:
        return raw
    if not migrate:
        section, key = MOVED_MODEL_KEYS[old[0]]
        raise ConfigError(f"params: 'model.{old[0]}' is now 'model.{section}.{key}'; rename it")
    model = dict(model)
    for k in old:
        section, key = MOVED_MODEL_KEYS[k]
        if isinstance(model.get(section, {}), dict):  # else left in place: validation names it
            model[section] = {**model.get(section, {}), key: model.pop(k)}
    return {**raw, "model": model}


def config_from_dict(raw: dict[str, Any], stored: bool = False) -> Config:
    """Validate a nested dict (params.yaml's content) into a :class:`Config`. ``stored``: the
    dict comes from a checkpoint, whose keys of earlier versions are read in their new place."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("params: the file must hold a mapping of sections (data, model, train, ...)")
    cfg = _build(Config, _moved_keys(raw, migrate=stored))
    _check_semantics(cfg)
    return cfg


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Config:
    """Read ``path`` (YAML), apply ``overrides`` and validate; the one entry point."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = _yaml_load(path.read_text(encoding="utf-8")) or {}
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        what = "a key appears twice in one section" if isinstance(err, DuplicateKeyError) else "not valid YAML"
        raise ConfigError(f"{path}: {what}{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the params file ({err.strerror or err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must hold a mapping of sections (data, model, train, ...)")
    return config_from_dict(apply_overrides(raw, overrides or []))
