"""params.yaml validation: unknown keys, wrong types, bad values fail early and clearly."""

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from m3sa.config import Config, apply_overrides, config_from_dict, load_params
from m3sa.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_match_the_dataclass_defaults_and_keys():
    cfg = load_params(ROOT / "params.yaml")
    assert cfg.model.filter == "soft"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # every dataclass field is written out in params.yaml (documented there)
    for section, sub in Config().to_dict().items():
        assert set(raw[section]) == set(sub), section


def test_override_parses_yaml_scalars_and_lists():
    cfg = load_params(ROOT / "params.yaml", ["model.filter=hard", "train.seeds=[4, 5]", "train.lr=0.01"])
    assert cfg.model.filter == "hard"
    assert cfg.train.seeds == (4, 5)
    assert cfg.train.lr == pytest.approx(0.01)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.filtr=hard", "unknown key 'model.filtr'"),
        ("model.filter=medium", "choose one of: soft, hard, none"),
        ("model.fusion=sum", "choose one of: add, concat, tensor, graph"),
        ("train.epochs=two", "'train.epochs' must be an integer"),
        ("train.epochs=0", "out of range"),
        ("model.baseline_embedding=maybe", "must be true or false"),
        ("data.files.visual=[1]", "'data.files.visual' must be a string"),
        ("nosection.key=1", "unknown key 'nosection'"),
        ("model.dim=63", "divisible"),
        ("train.seeds=[1, 1]", "duplicates"),
        ("model.filter", "dotted.key=value"),
        # gaps found by fuzzing: non-finite numbers and empty paths
        ("train.lr=.nan", "'train.lr' must be a finite number, got nan"),
        ("train.lr=.inf", "'train.lr' must be a finite number, got inf"),
        ("model.dropout=-.inf", "'model.dropout' must be a finite number"),
        ("data.nonfinite_value=.nan", "'data.nonfinite_value' must be a finite number"),
        ("data.split_fractions=[.nan, 0.5, 0.5]", "'data.split_fractions[0]' must be a finite number"),
        ("data.features_dir=", "'data.features_dir' must not be empty"),
        ("train.models_dir=' '", "'train.models_dir' must not be empty"),
        ("model.text_encoder=", "'model.text_encoder' must not be empty"),
        # seeds the random generators refuse, and a Hard Concrete stretch that does not stretch
        ("data.sample_seed=-1", "'data.sample_seed' = -1 is out of range"),
        ("data.split_seed=-2", "'data.split_seed' = -2 is out of range"),
        ("train.seeds=[0, -1]", "'train.seeds' must be integers >= 0"),
        ("model.hard_gamma=0.5", "model.hard_gamma < 0 < 1 < model.hard_zeta"),
        ("model.hard_zeta=0.9", "model.hard_gamma < 0 < 1 < model.hard_zeta"),
        ("report.title=2024-01-01", "'report.title' must be a string, got datetime.date"),
    ],
)
def test_bad_overrides_name_the_key_and_allowed_values(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_params(ROOT / "params.yaml", [override])
    assert fragment in str(err.value)


def test_null_modality_is_allowed_but_not_all_of_them():
    cfg = config_from_dict({"data": {"files": {"visual": None}}})
    assert cfg.data.files.visual is None
    with pytest.raises(ConfigError, match="names no modality"):
        config_from_dict({"data": {"files": {"words": None, "acoustic": None, "visual": None}}})


def test_apply_overrides_does_not_mutate_input():
    raw = {"model": {"filter": "soft"}}
    out = apply_overrides(raw, ["model.filter=hard"])
    assert raw["model"]["filter"] == "soft" and out["model"]["filter"] == "hard"


def test_missing_and_malformed_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    bad.write_bytes(b"data:\n  source: \xff\n")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_params(bad)
    with pytest.raises(ConfigError, match="cannot read the params file"):
        load_params(tmp_path)  # a folder
    twice = tmp_path / "twice.yaml"
    twice.write_text("model:\n  filter: soft\ntrain:\n  epochs: 2\nmodel:\n  fusion: concat\n")
    with pytest.raises(ConfigError, match=r"a key appears twice in one section \(line 5\)"):
        load_params(twice)  # DVC refuses it too; the second section must not silently replace the first


def test_values_read_as_yaml_1_2_like_dvc():
    cfg = load_params(ROOT / "params.yaml", ["train.epochs=010", "report.title=yes", "train.lr=1e-3"])
    assert cfg.train.epochs == 10 and cfg.report.title == "yes" and cfg.train.lr == pytest.approx(1e-3)


def test_digest_changes_with_params():
    assert Config().digest() != config_from_dict({"model": {"filter": "hard"}}).digest()
    assert Config().digest() == Config().digest()


def test_each_baseline_family_has_its_own_section():
    cfg = load_params(ROOT / "params.yaml", ["model.tfn.hidden=8", "model.mag.layer=2", "model.mag.beta=0.5"])
    assert (cfg.model.tfn.hidden, cfg.model.mag.layer, cfg.model.mag.beta) == (8, 2, 0.5)
    assert (cfg.model.lmf.rank, cfg.model.mult.layers) == (4, 1)
    with pytest.raises(ConfigError, match=r"'model.tfn.hidden' = 0 is out of range"):
        load_params(ROOT / "params.yaml", ["model.tfn.hidden=0"])
    with pytest.raises(ConfigError, match=r"unknown key 'model.lmf.hidden'"):
        load_params(ROOT / "params.yaml", ["model.lmf.hidden=3"])


@pytest.mark.parametrize("old, new", [("tfn_hidden", "tfn.hidden"), ("lmf_rank", "lmf.rank"),
                                      ("mult_layers", "mult.layers"), ("mag_beta", "mag.beta"),
                                      ("mag_layer", "mag.layer")])
def test_keys_of_earlier_versions_name_their_new_place_or_migrate_when_stored(old, new):
    with pytest.raises(ConfigError, match=rf"'model.{old}' is now 'model.{new}'; rename it"):
        load_params(ROOT / "params.yaml", [f"model.{old}=2"])
    stored = Config().to_dict()
    section, key = new.split(".")
    del stored["model"][section]
    stored["model"][old] = 2
    assert getattr(getattr(config_from_dict(stored, stored=True).model, section), key) == 2


@pytest.mark.parametrize("section", [None, 3, "x"])
def test_stored_flat_key_beside_a_section_that_is_no_mapping_is_one_config_error(section):
    stored = {"model": {"tfn_hidden": 8, "tfn": section}}  # a checkpoint is untrusted input
    with pytest.raises(ConfigError, match="model.tfn"):
        config_from_dict(stored, stored=True)


# ---------------------------------------------------------------- gaps found by fuzzing

def test_exponent_without_a_dot_is_a_number():
    # PyYAML (YAML 1.1) reads 1e-3 as a string; YAML 1.2 and `dvc exp run -S` read a number
    assert load_params(ROOT / "params.yaml", ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)
    assert load_params(ROOT / "params.yaml", ["train.lr_text=5E-5"]).train.lr_text == pytest.approx(5e-5)
    assert load_params(ROOT / "params.yaml", ["report.title='1e3'"]).report.title == "1e3"  # quoted: a string
    with pytest.raises(ConfigError, match="'report.title' must be a string, got 1000.0"):
        load_params(ROOT / "params.yaml", ["report.title=1e3"])  # a number in YAML 1.2, as for DVC
    for bad in ("train.lr=1e-3x", "train.epochs=1e3"):
        with pytest.raises(ConfigError, match="must be a"):
            load_params(ROOT / "params.yaml", [bad])


_KEYS = sorted(f"{s}.{k}" for s, sub in Config().to_dict().items() for k in sub
               if not isinstance(sub[k], dict)) + ["data.files.words", "data.files.labels", "nosection.x", "model"]
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(), st.text(max_size=12),
                    st.lists(st.integers(-3, 3), max_size=4), st.sampled_from(["soft", "hard", "add", "cpu", "tiny"]))


_RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES), min_size=1, max_size=4))
def test_fuzzed_overrides_give_a_config_or_a_config_error(pairs):
    overrides = [f"{k}={json.dumps(v)}" for k, v in pairs]  # JSON is YAML: the value arrives as drawn
    try:
        cfg = config_from_dict(apply_overrides(_RAW, overrides))
    except ConfigError as err:
        assert "\n" not in str(err) and ("params" in str(err) or "override" in str(err))
        return
    assert isinstance(cfg, Config)
    json.dumps(cfg.to_dict(), allow_nan=False)  # a valid config is plain, finite data
