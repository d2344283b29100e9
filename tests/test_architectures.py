"""The architecture adapter: each family's blocks, final norm, MLP parts and parameter roles."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_model
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    MistralConfig,
    OlmoConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

from iml_hf.measure.gradients import parameter_groups
from iml_hf.models.architectures import architecture_of, blocks, final_norm, mlp_parts, module_roles

ALIASES = {
    "mistral": MistralConfig,
    "qwen2": Qwen2Config,
    "qwen3": Qwen3Config,
    "gemma": GemmaConfig,
    "olmo": OlmoConfig,
    "phi3": Phi3Config,
}


def _alias_model(name: str, vocab_size: int) -> nn.Module:
    torch.manual_seed(0)
    config = ALIASES[name](
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        pad_token_id=0,
    )
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gpt_neox", *ALIASES])
def test_last_block_then_final_norm_then_head_is_the_models_forward(architecture, tiny_tokenizer):
    if architecture in ALIASES:
        model = _alias_model(architecture, len(tiny_tokenizer))
    else:
        model = build_tiny_model(tiny_tokenizer, architecture).eval()
    captured = {}
    last = blocks(model)[-1]
    handle = last.register_forward_hook(
        lambda module, args, out: captured.update(h=out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        logits = model(torch.tensor([[2, 5, 9, 4, 7]])).logits
        rebuilt = model.get_output_embeddings()(final_norm(model)(captured["h"]))
    handle.remove()
    assert len(blocks(model)) == 2
    if getattr(model.config, "final_logit_softcapping", None):  # gemma-style capping after the head
        return
    torch.testing.assert_close(rebuilt, logits)
    assert mlp_parts(model)[0][0] is getattr(blocks(model)[0], architecture_of(model).mlp)


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gpt_neox"])
def test_parameter_groups_follow_the_adapter(architecture, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, architecture)
    groups = parameter_groups(model)
    mlp_params = {id(p) for mlp, _, _ in mlp_parts(model) for p in mlp.parameters()}
    names = dict(model.named_parameters())
    assert {n for n, g in groups.items() if g == "mlp"} == {n for n in groups if id(names[n]) in mlp_params}
    norm_params = {
        id(p) for norm in [final_norm(model), *(n for _, n, _ in mlp_parts(model))] for p in norm.parameters()
    }
    assert norm_params <= {id(names[n]) for n, g in groups.items() if g == "norms"}
    assert "other" not in groups.values()
    assert set(groups.values()) >= {"embeddings", "attention", "mlp", "norms"}
    roles = module_roles(model)
    assert all(name in dict(model.named_modules()) for name in roles)


def test_llama_family_aliases_and_unknown_models(tiny_tokenizer):
    mistral = AutoModelForCausalLM.from_config(
        MistralConfig(
            vocab_size=len(tiny_tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    assert architecture_of(mistral).gated_mlp and mlp_parts(mistral)[0][2] is mistral.model.layers[0].mlp.down_proj
    mistral.config.model_type = "mystery"
    with pytest.raises(ValueError, match="'mystery' is not a registered decoder architecture.*register_architecture"):
        blocks(mistral)
