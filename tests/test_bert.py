"""m3sa.models.bert computes what transformers' BertModel computes, bit for bit, and loads safely."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModel
from transformers import BertConfig as HFConfig
from transformers import BertModel

from m3sa.errors import ModelError
from m3sa.models.bert import Bert, BertConfig, load_bert, read_config
from m3sa.models.text import load_encoder
from m3sa.tokenization import packaged_path

SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48}


@pytest.fixture(scope="module")
def pair() -> tuple[Bert, BertModel]:
    """The packaged MiniLM, loaded by m3sa and by transformers."""
    ref = AutoModel.from_pretrained(str(packaged_path("all-MiniLM-L6-v2")), local_files_only=True)
    ref.pooler = None
    return load_encoder("packaged:all-MiniLM-L6-v2"), ref


def _inputs(padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 5000, (4, 11), generator=g)
    mask = torch.ones(4, 11, dtype=torch.long)
    if padded:
        mask[1, 7:] = 0
        mask[3, 4:] = 0
    return ids, mask


@pytest.mark.parametrize("train", [False, True])  # True: the same dropout draws
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("token_types", [False, True])
def test_same_outputs_and_gradients_as_transformers(pair, train, padded, token_types):
    ours, ref = pair
    ids, mask = _inputs(padded)
    kwargs = {"token_type_ids": torch.zeros_like(ids)} if token_types else {}
    outs = []
    for net in (ours, ref):
        net.train(train)
        net.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        hidden = net(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
        (hidden * torch.linspace(-1, 1, hidden.numel()).view_as(hidden)).sum().backward()
        outs.append(hidden)
    assert torch.equal(outs[0], outs[1])
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_same_weights_names_and_order_as_transformers(pair):
    ours, ref = pair
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    theirs = ref.state_dict()
    assert ours.state_dict().keys() == theirs.keys()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.state_dict().items())


def test_ready_made_4d_mask_equals_the_2d_one(pair):
    ours, _ = pair
    ours.eval()
    ids, mask = _inputs(True)
    ready = mask.bool()[:, None, None, :].expand(-1, 1, ids.shape[1], -1)
    with torch.no_grad():
        assert torch.equal(ours(ids, ready).last_hidden_state, ours(ids, mask).last_hidden_state)


def test_random_spec_has_the_seeded_transformers_weights():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ref = BertModel(HFConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64), add_pooling_layer=False)
    ours = load_encoder("random:tiny")
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())


def test_loading_draws_nothing_from_the_global_generator():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    load_encoder("packaged:all-MiniLM-L6-v2")
    assert torch.equal(torch.get_rng_state(), before)


def _folder(tmp_path, state: dict[str, torch.Tensor], **config) -> object:
    folder = tmp_path / "enc"
    folder.mkdir()
    cfg = {"model_type": "bert", "vocab_size": 50, **SHAPE, **config}
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return folder


def _hf_state(prefix: str = "") -> tuple[BertModel, dict[str, torch.Tensor]]:
    torch.manual_seed(3)
    hf = BertModel(HFConfig(vocab_size=50, **SHAPE), add_pooling_layer=True)
    return hf, {prefix + k: v for k, v in hf.state_dict().items()}


def test_bert_prefix_old_layernorm_names_and_extra_heads_are_read(tmp_path):
    hf, state = _hf_state("bert.")
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in state.items()}
    state["cls.predictions.bias"] = torch.zeros(50)  # a pre-training head: not part of the encoder
    folder = _folder(tmp_path, state)
    ours = load_bert(folder, read_config(folder))
    hf.eval()
    ids, mask = torch.randint(0, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(ours.eval()(ids, mask).last_hidden_state, hf(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_pytorch_bin_weights_load_without_running_code(tmp_path):
    hf, state = _hf_state()
    folder = _folder(tmp_path, state)
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    assert torch.equal(load_bert(folder, read_config(folder)).embeddings.word_embeddings.weight,
                       hf.embeddings.word_embeddings.weight)
    (folder / "pytorch_model.bin").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # a code-running pickle
    with pytest.raises(ModelError, match="not a weights file"):
        load_bert(folder, read_config(folder))


@pytest.mark.parametrize("change", [{"model_type": "roberta"}, {"hidden_act": "gelu_new"},
                                    {"position_embedding_type": "relative_key"}, {"is_decoder": True},
                                    {"dtype": "float16"}])
def test_encoders_it_does_not_cover_go_to_transformers(tmp_path, change):
    _, state = _hf_state()
    assert read_config(_folder(tmp_path, state, **change)) is None


@pytest.mark.parametrize("damage", ["missing", "shape", "garbage"])
def test_bad_weights_give_one_line(tmp_path, damage):
    _, state = _hf_state()
    if damage == "missing":
        del state["encoder.layer.1.output.dense.weight"]
    if damage == "shape":
        state["embeddings.word_embeddings.weight"] = torch.zeros(49, 32)
    folder = _folder(tmp_path, state)
    if damage == "garbage":
        (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError) as err:
        load_bert(folder, read_config(folder))
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_config_shape_errors_are_model_errors():
    with pytest.raises(ModelError, match="multiple"):
        BertConfig(vocab_size=10, hidden_size=30, num_attention_heads=4)


def test_training_imports_no_transformers_model_code(tmp_path):
    """The default encoder is built without transformers' model code (its import weight)."""
    code = ("import sys; from m3sa.models.text import load_encoder; load_encoder('packaged:all-MiniLM-L6-v2'); "
            "bad = [m for m in ('transformers.modeling_utils', 'torch._dynamo', 'sympy', 'scipy') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_local_folder_copy_of_the_packaged_model_uses_this_module(tmp_path):
    folder = tmp_path / "minilm"
    shutil.copytree(packaged_path("all-MiniLM-L6-v2"), folder)
    assert isinstance(load_encoder(str(folder)), Bert)
