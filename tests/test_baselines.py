"""The Table 1 comparison systems: shapes, training steps, hand-checked parameter counts,
fusion algebra, MAG's norm rule, and the shared train/evaluate loop writing metrics files."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from m3sa.config import Config, LMFConfig, MAGConfig, ModelConfig, TFNConfig, config_from_dict
from m3sa.errors import ModelError
from m3sa.metrics import regression_metrics
from m3sa.models import REGISTRY, build_model
from m3sa.models.base import count_parameters
from m3sa.models.baseline_parts import FrozenText, expand_to_tokens, masked_mean
from m3sa.models.lmf import LowRankFusion
from m3sa.models.mag_bert import MAG, scale_displacement
from m3sa.models.text import load_encoder
from m3sa.models.tfn import outer_product_fusion

pytestmark = pytest.mark.usefixtures("single_thread")

BASELINES = ["ef_lstm", "lf_lstm", "tfn", "lmf", "mult", "mag_bert"]
DIMS = {"acoustic": 74, "visual": 47}
ALL = ("language", "acoustic", "visual")
NO_VISUAL = ("language", "acoustic")
TINY_HIDDEN = 32  # random:tiny encoder width
METRIC_KEYS = {"mae", "corr", "acc7", "acc5", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0"}


def lin(i: int, o: int) -> int:
    """Parameters of nn.Linear(i, o)."""
    return i * o + o


def lstm(i: int, h: int) -> int:
    """Parameters of a one-layer nn.LSTM(i, h): 4 gates, input and hidden weights, two biases."""
    return 4 * h * (i + h) + 8 * h


def pad_batch(batch: dict[str, torch.Tensor], extra: int) -> dict[str, torch.Tensor]:
    """The same batch with ``extra`` more padding steps on every sequence."""
    out = dict(batch)
    out["input_ids"] = torch.nn.functional.pad(batch["input_ids"], (0, extra))
    out["attention_mask"] = torch.nn.functional.pad(batch["attention_mask"], (0, extra))
    out["word_index"] = torch.nn.functional.pad(batch["word_index"], (0, extra), value=-1)
    for m in ("acoustic", "visual"):
        if m in batch:
            out[m] = torch.nn.functional.pad(batch[m], (0, 0, 0, extra))
            out[f"{m}_mask"] = torch.nn.functional.pad(batch[f"{m}_mask"], (0, extra))
    return out


def test_every_configurable_system_is_registered():
    names = typing.get_args(typing.get_type_hints(ModelConfig)["name"])
    assert set(names) == set(REGISTRY)


@pytest.mark.parametrize("modalities", [ALL, NO_VISUAL], ids=["M3", "M2"])
@pytest.mark.parametrize("name", BASELINES)
def test_trains_a_few_steps_with_the_contract_outputs(name, modalities, make_model_cfg, make_batch):
    torch.manual_seed(0)
    cfg = make_model_cfg(name=name, tfn=TFNConfig(hidden=4))
    model = build_model(cfg, DIMS, modalities)
    assert model.two_phase is False and model.unimodal_parameters() == {}
    batch = make_batch(batch_size=8, modalities=modalities)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    model.train()
    for _ in range(10):
        out = model(batch)
        assert out.pred.shape == (8,) and out.pred.dtype == torch.float32
        assert out.unimodal == {} and out.filter_values == {}
        assert out.penalty.dim() == 0 and out.penalty.item() == 0.0
        loss = (out.pred - batch["label"]).abs().mean()
        opt.zero_grad()
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing[:3]
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses  # fits a fixed batch
    # The frozen text encoder (all systems but MAG-BERT) did not move.
    for n, p in model.named_parameters():
        if n in frozen:
            torch.testing.assert_close(p, frozen[n], rtol=0, atol=0)
    if name == "mag_bert":
        assert not frozen and len(model.text_parameters()) > 0
    else:
        assert frozen and all(not p.requires_grad for p in model.text_parameters())


@pytest.mark.parametrize("name", BASELINES)
def test_padding_does_not_change_predictions_and_drop_does(name, make_model_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model(make_model_cfg(name=name, tfn=TFNConfig(hidden=4)), DIMS, ALL).eval()
    batch = make_batch(batch_size=5, modalities=ALL, lengths=[1, 3, 6, 2, 4], seed=3)
    with torch.no_grad():
        full = model(batch).pred
        torch.testing.assert_close(model(pad_batch(batch, 3)).pred, full, atol=2e-5, rtol=1e-4)
        for m in ALL:
            dropped = model(batch, drop=m).pred
            assert torch.isfinite(dropped).all()
            assert not torch.allclose(dropped, full), m
    with pytest.raises(ModelError, match="cannot drop modality 'visual'"):
        build_model(make_model_cfg(name=name, tfn=TFNConfig(hidden=4)), DIMS, NO_VISUAL)(batch, drop="visual")


@pytest.mark.parametrize("name", BASELINES)
def test_state_dict_round_trip(name, make_model_cfg, make_batch):
    """A second build accepts the first one's weights strictly (what evaluation's load_model needs)."""
    cfg = make_model_cfg(name=name, tfn=TFNConfig(hidden=4))
    torch.manual_seed(0)
    a = build_model(cfg, DIMS, NO_VISUAL).eval()
    torch.manual_seed(1)
    b = build_model(cfg, DIMS, NO_VISUAL).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    batch = make_batch(batch_size=3, modalities=NO_VISUAL)
    with torch.no_grad():
        torch.testing.assert_close(b(batch).pred, a(batch).pred)


def test_needs_two_modalities_and_mag_needs_language(make_model_cfg):
    for name in BASELINES:
        with pytest.raises(ModelError, match="at least 2 modalities"):
            build_model(make_model_cfg(name=name), DIMS, ("language",))
    with pytest.raises(ModelError, match="mag_bert needs the language modality"):
        build_model(make_model_cfg(name="mag_bert"), DIMS, ("acoustic", "visual"))
    with pytest.raises(ModelError, match="model.mag.layer = 3, but the text encoder has 2 layers"):
        build_model(make_model_cfg(name="mag_bert", mag=MAGConfig(layer=3)), DIMS, ALL)


@pytest.mark.parametrize("name", ["ef_lstm", "lf_lstm", "tfn", "lmf", "mult"])
def test_acoustic_visual_only(name, make_model_cfg, make_batch):
    model = build_model(make_model_cfg(name=name, tfn=TFNConfig(hidden=4)), DIMS, ("acoustic", "visual"))
    assert model(make_batch(batch_size=3, modalities=("acoustic", "visual"))).pred.shape == (3,)


# ---------------------------------------------------------------- hand-checked parameter counts


def test_tfn_parameter_count_by_hand(make_model_cfg):
    d, h, t = 16, 4, TINY_HIDDEN
    model = build_model(make_model_cfg(name="tfn", tfn=TFNConfig(hidden=h)), DIMS, ALL)
    text = lstm(t, d) + lin(d, h)  # LSTM(32 -> 16) = 3200, Linear(16 -> 4) = 68
    av = sum(lin(DIMS[m], h) + 2 * lin(h, h) for m in ("acoustic", "visual"))  # 340 + 232
    post = lin((h + 1) ** 3, d) + lin(d, d) + lin(d, 1)  # 125*16+16 + 272 + 17 = 2305
    assert text + av + post == 6145
    assert count_parameters(model, trainable_only=True) == 6145
    m2 = build_model(make_model_cfg(name="tfn", tfn=TFNConfig(hidden=h)), DIMS, NO_VISUAL)
    assert count_parameters(m2, trainable_only=True) == text + 340 + lin((h + 1) ** 2, d) + lin(d, d) + lin(d, 1)


def test_lmf_parameter_count_by_hand(make_model_cfg):
    d, r, t = 16, 4, TINY_HIDDEN
    model = build_model(make_model_cfg(name="lmf", lmf=LMFConfig(rank=r)), DIMS, ALL)
    text = lstm(t, d) + lin(d, d)  # 3200 + 272
    av = sum(lin(DIMS[m], d) + 2 * lin(d, d) for m in ("acoustic", "visual"))  # 1744 + 1312
    fusion = 3 * r * (d + 1) * 1 + r + 1  # factors (r, d+1, 1) x 3, lambda (1, r), bias (1, 1)
    assert text + av + fusion == 6737
    assert count_parameters(model, trainable_only=True) == 6737
    assert count_parameters(model.fusion) == fusion


def test_mag_parameter_count_by_hand(make_model_cfg):
    h = TINY_HIDDEN
    model = build_model(make_model_cfg(name="mag_bert"), DIMS, ALL)
    gate = sum(lin(DIMS[m] + h, h) + lin(DIMS[m], h) for m in ("acoustic", "visual")) + 2 * h  # + LayerNorm
    assert count_parameters(model.mag) == gate
    head = lin(h, h) + lin(h, 1)
    assert count_parameters(model) == count_parameters(model.bert) + gate + head


# ---------------------------------------------------------------- fusion algebra


def test_outer_product_by_hand():
    zs = [torch.tensor([[2.0]]), torch.tensor([[3.0, 5.0]])]
    # [2, 1] (x) [3, 5, 1] = [6, 10, 2, 3, 5, 1]
    torch.testing.assert_close(outer_product_fusion(zs), torch.tensor([[6.0, 10.0, 2.0, 3.0, 5.0, 1.0]]))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.lists(st.integers(1, 4), min_size=2, max_size=3), st.integers(0, 10_000))
def test_low_rank_fusion_equals_tensor_fusion_with_the_rebuilt_weight(rank, widths, seed):
    """LMF eq. 6: sum_i lambda_i prod_m (W_m^(i) z_m') = <W, z_1' (x) ... (x) z_M'> + b with
    W = sum_i lambda_i W_1^(i) (x) ... (x) W_M^(i)."""
    torch.manual_seed(seed)
    fusion = LowRankFusion(widths, rank).double()
    zs = [torch.randn(3, w, dtype=torch.float64) for w in widths]
    full = None
    for f in fusion.factors:  # (r, w+1, 1) -> outer product over modalities, per rank
        col = f[..., 0]  # (r, w+1)
        full = col if full is None else (full.unsqueeze(-1) * col.unsqueeze(1)).flatten(1)
    weight = fusion.fusion_weights @ full  # (1, r) @ (r, prod(w+1)) -> (1, prod(w+1))
    expected = outer_product_fusion(zs) @ weight.T + fusion.fusion_bias  # (3, 1)
    torch.testing.assert_close(fusion(zs), expected)


def test_expand_to_tokens_by_hand():
    rows = torch.tensor([[[1.0], [2.0], [3.0]]])  # one sample, 3 word rows
    row_mask = torch.tensor([[True, True, False]])  # the third row is padding
    word_index = torch.tensor([[-1, 0, 0, 1, 2, -1, 7]])  # [CLS] w0 w0 w1 (w2: padded) [SEP] (beyond rows)
    out = expand_to_tokens(rows, row_mask, word_index)
    assert out.shape == (1, 7, 1)
    assert out[0, :, 0].tolist() == [0.0, 1.0, 1.0, 2.0, 0.0, 0.0, 0.0]
    assert masked_mean(rows, row_mask).tolist() == [[1.5]]


def test_frozen_text_stays_in_eval_mode():
    frozen = FrozenText(load_encoder("random:tiny"))
    frozen.train()
    assert frozen.training and not frozen.bert.training
    assert all(not p.requires_grad for p in frozen.parameters())


# ---------------------------------------------------------------- MAG norm rule

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.lists(finite, min_size=8, max_size=8), st.lists(finite, min_size=8, max_size=8),
       st.floats(0.0, 5.0), st.floats(1e-3, 1e3))
def test_scaled_displacement_obeys_the_norm_rule(n, z, h, beta, h_scale):
    z_t = torch.tensor(z[:n])
    h_t = torch.tensor(h[:n]) * h_scale
    shift = scale_displacement(z_t, h_t, beta)
    zn, hn, sn = (float(torch.linalg.vector_norm(v.double())) for v in (z_t, h_t, shift))
    assert sn <= beta * zn * (1 + 1e-6) + 1e-6
    assert sn <= hn * (1 + 1e-6) + 1e-6  # alpha <= 1: never amplified
    if hn > 1e-3 and beta * zn >= hn * 1.001:  # the rule does not bind: H passes unchanged
        torch.testing.assert_close(shift, h_t)
    # same direction as H
    if sn > 1e-6:
        cos = float(torch.dot(shift.double(), h_t.double()) / (sn * hn))
        assert cos > 1 - 1e-5


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 3.0), st.floats(0.01, 100.0), st.integers(0, 10_000))
def test_mag_shift_is_at_most_beta_times_the_embedding_norm(beta, feat_scale, seed):
    torch.manual_seed(seed)
    mag = MAG(8, {"acoustic": 5, "visual": 3}, beta, dropout=0.0)
    z = torch.randn(2, 6, 8)
    feats = {"acoustic": torch.randn(2, 6, 5) * feat_scale, "visual": torch.randn(2, 6, 3) * feat_scale}
    out, shift = mag(z, feats)
    bound = beta * torch.linalg.vector_norm(z, dim=-1)  # (2, 6), per WordPiece
    assert (torch.linalg.vector_norm(shift, dim=-1) <= bound * (1 + 1e-5) + 1e-6).all()
    torch.testing.assert_close(out, mag.norm(z + shift))


def test_mag_zero_displacement_has_finite_gradient():
    z = torch.randn(4, 8, requires_grad=True)
    h = torch.zeros(4, 8, requires_grad=True)
    shift = scale_displacement(z, h, beta=1.0)
    shift.sum().backward()
    assert shift.abs().sum() == 0 and torch.isfinite(z.grad).all() and torch.isfinite(h.grad).all()


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_mag_gate_site(layer, make_model_cfg, make_batch):
    model = build_model(make_model_cfg(name="mag_bert", mag=MAGConfig(layer=layer)), DIMS, ALL).eval()
    site = model.bert.embeddings if layer == 0 else model.bert.encoder.layer[layer - 1]
    assert model.gate_site() is site
    seen = []
    site.register_forward_hook(lambda module, args, output: seen.append(output.detach().clone()))
    batch = make_batch(batch_size=2, modalities=ALL)
    with torch.no_grad():
        model(batch)
        # The gate's hook (registered first) already shifted what later hooks see:
        # LayerNorm(z + shift) has zero mean and unit variance per WordPiece before the affine part.
        assert len(seen) == 1 and torch.isfinite(seen[0]).all()
        normed = (seen[0] - model.mag.norm.bias) / model.mag.norm.weight
        torch.testing.assert_close(normed.mean(-1), torch.zeros(normed.shape[:2]), atol=1e-4, rtol=0)
    assert len(site._forward_hooks) == 1  # the gate's own hook is removed after each forward


# ---------------------------------------------------------------- one loop: training + evaluation


def _cfg(tmp: Path, name: str) -> Config:
    return config_from_dict({
        "data": {"features_dir": str(tmp / "features")},
        "model": {"name": name, "text_encoder": "random:tiny", "dim": 16, "transformer_heads": 2, "head_hidden": 16,
                  "dropout": 0.0, "max_tokens": 24, "tfn": {"hidden": 4}},
        "train": {"seeds": [0], "epochs": 1, "batch_size": 16, "num_threads": 1, "device": "cpu",
                  "max_batches": 2, "models_dir": str(tmp / "models"), "live_dir": str(tmp / "live")},
        "evaluate": {"batch_size": 8},
    })


@pytest.mark.parametrize("name", BASELINES)
def test_shared_loop_trains_evaluates_and_writes_metrics(name, tmp_path):
    from m3sa.evaluation import evaluate_all
    from m3sa.training import train_all
    from tiny_features import write_features

    write_features(tmp_path / "features", sizes=(32, 12, 12), modalities=NO_VISUAL)
    cfg = _cfg(tmp_path, name)
    summary = train_all(cfg, metrics_path=tmp_path / "metrics/train.json")
    assert summary["per_seed"][0]["epochs_run"] == 1
    result = evaluate_all(cfg, metrics_dir=tmp_path / "metrics", predictions_path=tmp_path / "predictions/test.parquet")
    test = json.loads((tmp_path / "metrics/test.json").read_text())
    assert set(test["mean"]) == METRIC_KEYS and len(test["per_seed"]) == 1
    assert test == result["test"]
    masks = json.loads((tmp_path / "metrics/masks.json").read_text())
    assert masks["mean"] == {}  # no filter
    robust = json.loads((tmp_path / "metrics/robustness.json").read_text())
    assert set(robust) == set(NO_VISUAL)
    # The metrics are those of the checkpoint's predictions.
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "predictions/test.parquet").to_pandas()
    recomputed = regression_metrics(table["pred"].to_numpy(), table["label"].to_numpy())
    assert recomputed["mae"] == pytest.approx(test["mean"]["mae"], abs=1e-6)
    assert np.isnan(table["filter_language"]).all()


# ---------------------------------------------------------------- the Table 1 grid


def test_table1_grid_covers_every_system_and_matches_the_published_rows():
    from m3sa.config import apply_overrides
    from m3sa.report.experiments import flatten, system_label
    from m3sa.report.published import TABLE1_MOSI, matching_rows
    from pipelines.table1 import LABELS, TABLE1

    assert list(TABLE1) == list(LABELS)
    names = {o.split("=", 1)[1] for overrides in TABLE1.values() for o in overrides if o.startswith("model.name=")}
    assert names == set(REGISTRY) - {"text_only"}
    published = {r.system for r in TABLE1_MOSI}
    for system, overrides in TABLE1.items():
        cfg = config_from_dict(apply_overrides({}, overrides))  # every override is a valid parameter
        params = flatten(cfg.to_dict())
        assert system_label(params) == LABELS[system]
        rows = matching_rows(TABLE1_MOSI, params)
        assert [r.system for r in rows] == ([LABELS[system]] if LABELS[system] in published else [])
