"""From-scratch models of each family: every trainable parameter learns; attention-only is exact."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from iml_hf.config.args import ModelArguments
from iml_hf.data.collators import PadCollator
from iml_hf.data.tokenization import tokenize_corpus
from iml_hf.models.modeling import build_model, count_parameters

FAMILIES = ["gpt2", "llama", "gpt_neox"]


def _batch(tiny_corpus, tiny_tokenizer, n=32):
    rows = tokenize_corpus(tiny_corpus, tiny_tokenizer)["train"].shuffle(seed=0).select(range(n))
    return PadCollator(tiny_tokenizer.pad_token_id)(
        [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    )


def _tiny(architecture, tokenizer, **kw):
    torch.manual_seed(0)
    args = ModelArguments(architecture=architecture, num_layers=2, hidden_size=16, num_heads=2, **kw)
    return build_model(args, tokenizer)


@pytest.mark.parametrize("architecture", FAMILIES)
@pytest.mark.parametrize("attention_only", [False, True])
def test_training_steps_change_every_trainable_parameter(architecture, attention_only, tiny_corpus, tiny_tokenizer):
    model = _tiny(architecture, tiny_tokenizer, attention_only=attention_only)
    assert model.config.vocab_size == len(tiny_tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(tiny_corpus, tiny_tokenizer)
    for _ in range(3):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param)
        assert changed == param.requires_grad, f"{architecture}: {name} changed={changed}"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert bool(frozen) == attention_only


@pytest.mark.parametrize("architecture", FAMILIES)
def test_attention_only_mlp_contributes_nothing_and_reloads(architecture, tiny_tokenizer, tmp_path):
    model = _tiny(architecture, tiny_tokenizer, attention_only=True)
    counts = count_parameters(model)
    assert counts["trainable"] < counts["total"]
    block = (model.base_model.h if architecture == "gpt2" else model.base_model.layers)[0]
    x = torch.randn(2, 5, 16)
    assert torch.count_nonzero(block.mlp(x)) == 0
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([[2, 5, 9, 4, 3]])
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
    assert reloaded.config.attention_only is True


def test_pretrained_checkpoint_is_loaded_by_path(tiny_tokenizer, tmp_path):
    model = _tiny("llama", tiny_tokenizer)
    model.save_pretrained(tmp_path)
    loaded = build_model(ModelArguments(model_name_or_path=str(tmp_path)), tiny_tokenizer)
    ids = torch.tensor([[2, 5, 9, 4, 3]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_config_overrides_are_checked(tiny_tokenizer):
    model = build_model(ModelArguments(config_overrides={"layer_norm_epsilon": 1e-3}), tiny_tokenizer)
    assert model.config.layer_norm_epsilon == 1e-3
    with pytest.raises(ValueError, match="no field 'layer_norm_eps'"):
        build_model(ModelArguments(config_overrides={"layer_norm_eps": 1e-3}), tiny_tokenizer)
