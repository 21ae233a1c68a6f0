"""params.yaml validation: unknown keys, wrong types, bad values fail early and clearly."""

from pathlib import Path

import pytest
import yaml

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


def test_digest_changes_with_params():
    assert Config().digest() != config_from_dict({"model": {"filter": "hard"}}).digest()
    assert Config().digest() == Config().digest()
