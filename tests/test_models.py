"""Models: every ablation builds and trains a step; pooling, drop, parameter groups, registry."""

from __future__ import annotations

import itertools

import pytest
import torch

from m3sa.config import ModelConfig
from m3sa.errors import ModelError
from m3sa.losses import multimodal_loss, unimodal_losses, unimodal_objective
from m3sa.models import REGISTRY, BaseModel, ModelOutput, build_model, load_text_encoder
from m3sa.models.base import count_parameters
from m3sa.models.encoders import LanguageNetwork, SequenceNetwork, last_valid_step

pytestmark = pytest.mark.usefixtures("single_thread")

DIMS = {"acoustic": 74, "visual": 47}
ALL = ("language", "acoustic", "visual")
FILTERS = ["soft", "hard", "none"]
FUSIONS = ["add", "concat", "tensor", "graph"]
GRID = list(itertools.product(FILTERS, [True, False], [True, False], FUSIONS))


def _train_step(model: BaseModel, batch: dict, cfg: ModelConfig) -> ModelOutput:
    """Both phases of a step (section 4.1), checking where each phase's gradient goes."""
    model.train()
    out = model(batch)
    b = batch["label"].shape[0]
    assert out.pred.shape == (b,)
    assert set(out.unimodal) == set(model.modalities)
    assert set(out.filter_values) == (set() if cfg.filter == "none" else set(model.modalities))
    assert out.penalty.dim() == 0
    if cfg.filter != "soft":
        assert out.penalty.item() == 0.0
    phase1 = unimodal_objective(unimodal_losses(out.unimodal, batch["label"], model.modalities), cfg)
    phase1.backward()
    unimodal_ids = {id(p) for group in model.unimodal_parameters().values() for p in group}
    for name, p in model.named_parameters():
        if id(p) not in unimodal_ids:
            assert p.grad is None, f"phase 1 reached {name}"
    model.zero_grad(set_to_none=True)
    out = model(batch)
    loss = multimodal_loss(out.pred, batch["label"]) + 0.1 * out.penalty
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
    return out


@pytest.mark.parametrize("filt,baseline,modulation,fusion", GRID)
def test_every_ablation_builds_and_trains_a_step(make_model_cfg, make_batch, filt, baseline, modulation, fusion):
    cfg = make_model_cfg(filter=filt, baseline_embedding=baseline, modulation=modulation, fusion=fusion)
    model = build_model(cfg, DIMS, ALL)
    assert model.two_phase
    out = _train_step(model, make_batch(seed=1), cfg)
    assert torch.isfinite(out.pred).all()
    if filt == "hard":
        for v in out.filter_values.values():
            assert set(v.detach().unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("filt,fusion", list(itertools.product(FILTERS, FUSIONS)))
def test_two_modalities_without_visual(make_model_cfg, make_batch, filt, fusion):
    cfg = make_model_cfg(filter=filt, fusion=fusion)
    mods = ("language", "acoustic")
    model = build_model(cfg, {"acoustic": 74}, mods)
    assert set(model.unimodal_parameters()) == {"language", "acoustic", "head"}
    _train_step(model, make_batch(modalities=mods), cfg)


def test_acoustic_and_visual_without_language(make_model_cfg, make_batch):
    cfg = make_model_cfg()
    model = build_model(cfg, DIMS, ("acoustic", "visual"))
    assert model.text_parameters() == []
    _train_step(model, make_batch(), cfg)


def test_last_valid_step_picks_the_right_step():
    seq = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [False, True, True, True]])
    torch.testing.assert_close(last_valid_step(seq, mask), torch.stack([seq[0, 1], seq[1, 3]]))
    empty = torch.zeros(2, 4, dtype=torch.bool)
    torch.testing.assert_close(last_valid_step(seq, empty), torch.zeros(2, 3))


def test_sequence_network_ignores_padding_and_empty_rows_give_zeros(make_model_cfg, make_batch):
    cfg = make_model_cfg()
    net = SequenceNetwork("acoustic", 74, 3, cfg).eval()
    batch = make_batch(batch_size=3, lengths=[3, 5, 0], modalities=("acoustic",))
    out = net(batch)  # (3, d)
    alone = {"acoustic": batch["acoustic"][:1, :3], "acoustic_mask": batch["acoustic_mask"][:1, :3]}
    torch.testing.assert_close(out[0], net(alone)[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[2], torch.zeros(cfg.dim))
    # the last valid step is what is pooled: changing the step after it changes nothing,
    # changing the last valid step itself does
    changed = dict(batch, acoustic=batch["acoustic"].clone())
    changed["acoustic"][0, 4] += 100.0
    torch.testing.assert_close(net(changed)[0], out[0])
    changed["acoustic"][0, 2] += 1.0
    assert not torch.allclose(net(changed)[0], out[0])
    all_empty = {"acoustic": torch.zeros(2, 0, 74), "acoustic_mask": torch.zeros(2, 0, dtype=torch.bool)}
    torch.testing.assert_close(net(all_empty), torch.zeros(2, cfg.dim))


def test_empty_segments_train_without_nan(make_model_cfg, make_batch):
    cfg = make_model_cfg()
    model = build_model(cfg, DIMS, ALL)
    batch = make_batch(batch_size=3, lengths=[0, 2, 4])
    _train_step(model, batch, cfg)


def test_language_network_pools_sep_and_ignores_padding(make_model_cfg, make_batch, tiny_text_encoder):
    cfg = make_model_cfg()
    net = LanguageNetwork(tiny_text_encoder[1], cfg).eval()
    batch = make_batch(batch_size=2, lengths=[2, 5], modalities=("language",))
    out = net(batch)
    alone = {"input_ids": batch["input_ids"][:1, :4], "attention_mask": batch["attention_mask"][:1, :4]}
    torch.testing.assert_close(out[0], net(alone)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("filt", ["soft", "hard", "none"])
def test_drop_treats_the_modality_as_absent(make_model_cfg, make_batch, filt):
    torch.manual_seed(0)
    model = build_model(make_model_cfg(filter=filt), DIMS, ALL).eval()
    batch = make_batch()
    with torch.no_grad():
        full = model(batch)
        dropped = model(batch, drop="acoustic")
        noisy = dict(batch, acoustic=torch.randn_like(batch["acoustic"]) * 5)
        dropped_noisy = model(noisy, drop="acoustic")
    torch.testing.assert_close(dropped.pred, dropped_noisy.pred)
    if filt != "hard":  # a hard filter may already have shut acoustic off for every sample
        assert not torch.allclose(full.pred, dropped.pred)
    assert "acoustic" not in dropped.unimodal
    if filt != "none":
        assert not dropped.filter_values["acoustic"].any()
    with pytest.raises(ModelError, match="cannot drop modality 'smell'"):
        model(batch, drop="smell")


def test_parameter_groups_by_owning_module(make_model_cfg):
    model = build_model(make_model_cfg(fusion="concat"), DIMS, ALL)
    groups = model.unimodal_parameters()
    assert set(groups) == {"language", "acoustic", "visual", "head"}
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids))
    expected = {id(p) for m in ALL for p in model.encoders[m].parameters()} | {id(p) for p in model.head.parameters()}
    assert set(ids) == expected
    rest = {id(p) for p in model.filter.parameters()} | {id(p) for p in model.fusion.parameters()}
    assert set(ids) | rest == {id(p) for p in model.parameters()}
    text = model.text_parameters()
    assert {id(p) for p in text} == {id(p) for p in model.encoders["language"].bert.parameters()}
    assert {id(p) for p in text} <= set(ids)


def test_set_epoch_ramps_lambda(make_model_cfg):
    model = build_model(make_model_cfg(soft_lambda=101.0, soft_lambda_warmup_epochs=2), DIMS, ALL)
    model.set_epoch(0)
    assert model.filter.lam.item() == 1.0
    model.set_epoch(1)
    assert model.filter.lam.item() == 51.0
    build_model(make_model_cfg(filter="none"), DIMS, ALL).set_epoch(3)  # no filter: no-op


def test_late_fusion_baseline(make_model_cfg, make_batch):
    cfg = make_model_cfg(name="late_fusion", filter="soft", modulation=True)
    model = build_model(cfg, DIMS, ALL)
    assert not model.two_phase and not hasattr(model, "filter")
    out = model(make_batch())
    assert out.unimodal == {} and out.filter_values == {} and out.penalty.item() == 0.0
    multimodal_loss(out.pred, make_batch()["label"]).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_text_only_baseline(make_model_cfg, make_batch):
    model = build_model(make_model_cfg(name="text_only"), DIMS, ALL).eval()
    assert not model.two_phase and model.unimodal_parameters() == {}
    batch = make_batch()
    out = model(batch)
    assert out.pred.shape == (4,) and out.unimodal == {} and out.filter_values == {}
    torch.testing.assert_close(model(batch, drop="visual").pred, out.pred)
    assert not torch.allclose(model(batch, drop="language").pred, out.pred)
    assert len(model.text_parameters()) == len(list(model.encoders["language"].bert.parameters()))
    with pytest.raises(ModelError, match="needs the language modality"):
        build_model(make_model_cfg(name="text_only"), DIMS, ("acoustic",))


def test_registry(make_model_cfg, monkeypatch):
    assert {"m3sa", "late_fusion", "text_only"} <= set(REGISTRY)
    monkeypatch.delitem(REGISTRY, "mult", raising=False)
    with pytest.raises(ModelError, match="'mult' is not implemented"):
        build_model(make_model_cfg(name="mult"), DIMS, ALL)
    monkeypatch.setitem(REGISTRY, "mult", "m3sa.models.late_fusion:build_text_only")
    assert type(build_model(make_model_cfg(name="mult"), DIMS, ALL)).__name__ == "TextOnly"


def test_bad_model_inputs(make_model_cfg):
    with pytest.raises(ModelError, match="at least 2 modalities"):
        build_model(make_model_cfg(), DIMS, ("language",))
    with pytest.raises(ModelError, match="no feature width for modality 'visual'"):
        build_model(make_model_cfg(), {"acoustic": 74}, ALL)
    with pytest.raises(ModelError, match="unknown modality 'audio'"):
        build_model(make_model_cfg(), DIMS, ("language", "audio"))


# ------------------------------------------------------------------ text encoders


def test_random_tiny_encoder_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    tok, a = load_text_encoder("random:tiny")
    assert torch.equal(torch.get_rng_state(), state)
    _, b = load_text_encoder("random:tiny")
    assert a.config.hidden_size == 32 and a.config.num_hidden_layers == 2
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert tok("hello world")["input_ids"][0] == 101


def test_packaged_minilm_loads_offline(make_batch):
    tok, enc = load_text_encoder("packaged:all-MiniLM-L6-v2")
    assert type(enc).__name__ == "Bert" and enc.config.hidden_size == 384  # m3sa.models.bert, no pooler
    assert getattr(enc, "pooler", None) is None
    ids = tok(["a great movie"], return_tensors="pt")
    assert enc(**ids).last_hidden_state.shape == (1, 5, 384)
    # the default model, with MiniLM, builds and runs
    cfg = ModelConfig()
    model = build_model(cfg, DIMS, ALL).eval()
    assert count_parameters(model) > count_parameters(enc) > 22_000_000
    with torch.no_grad():
        assert model(make_batch()).pred.shape == (4,)


def test_encoder_spec_errors(tmp_path):
    with pytest.raises(ModelError, match="not in the local Hugging Face cache|neither a local folder"):
        load_text_encoder("no-such-org/no-such-model-xyz")
    with pytest.raises(ModelError, match="does not exist"):
        load_text_encoder(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="no config.json"):
        load_text_encoder(str(tmp_path))
    with pytest.raises(ModelError, match="unknown random encoder"):
        load_text_encoder("random:huge")
    with pytest.raises(ModelError, match="unknown packaged encoder"):
        load_text_encoder("packaged:gpt-9")


def test_local_folder_encoder(tmp_path, tiny_text_encoder):
    from transformers import BertConfig, BertModel

    from m3sa.tokenization import RANDOM_SHAPES

    tok, enc = tiny_text_encoder
    saved = BertModel(BertConfig(vocab_size=enc.config.vocab_size, **RANDOM_SHAPES["tiny"]), add_pooling_layer=False)
    saved.load_state_dict(enc.state_dict())
    saved.save_pretrained(tmp_path)  # a folder as transformers writes it
    tok.save_pretrained(tmp_path)
    tok2, enc2 = load_text_encoder(str(tmp_path))
    assert enc2.config.hidden_size == 32
    for pa, pb in zip(enc.parameters(), enc2.parameters()):
        assert torch.equal(pa, pb)


def test_state_dict_round_trip(make_model_cfg, make_batch, tmp_path):
    cfg = make_model_cfg(filter="soft", soft_lambda=50.0, soft_lambda_warmup_epochs=5, fusion="graph")
    model = build_model(cfg, DIMS, ALL)
    model.set_epoch(2)
    torch.save({"model_state": model.state_dict()}, tmp_path / "ckpt.pt")
    torch.manual_seed(7)  # a different initialisation
    other = build_model(cfg, DIMS, ALL)
    other.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["model_state"])
    assert other.filter.lam.item() == pytest.approx(1 + 49 * 2 / 5)
    batch = make_batch()
    model.eval(), other.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch).pred, other(batch).pred)
