"""The architecture adapter: each family's blocks, final norm, MLP parts and parameter roles."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, MistralConfig

from iml_hf.architectures import architecture_of, blocks, final_norm, mlp_parts, module_roles
from iml_hf.gradients import parameter_groups
from conftest import build_tiny_model


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gpt_neox"])
def test_blocks_and_final_norm_rebuild_the_models_logits(architecture, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, architecture).eval()
    ids = torch.tensor([[2, 5, 9, 4, 7]])
    out = model(ids, output_hidden_states=True)
    assert len(blocks(model)) == 2 == len(out.hidden_states) - 1
    # the last hidden state HF returns is after the final norm: undo nothing, just re-apply the head
    torch.testing.assert_close(model.get_output_embeddings()(out.hidden_states[-1]), out.logits)
    assert isinstance(final_norm(model), nn.Module) and final_norm(model) is not blocks(model)[-1]


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gpt_neox"])
def test_parameter_groups_follow_the_adapter(architecture, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, architecture)
    groups = parameter_groups(model)
    mlp_params = {id(p) for mlp, _, _ in mlp_parts(model) for p in mlp.parameters()}
    names = dict(model.named_parameters())
    assert {n for n, g in groups.items() if g == "mlp"} == {n for n in groups if id(names[n]) in mlp_params}
    norm_params = {id(p) for norm in [final_norm(model), *(n for _, n, _ in mlp_parts(model))] for p in norm.parameters()}
    assert norm_params <= {id(names[n]) for n, g in groups.items() if g == "norms"}
    assert "other" not in groups.values()
    assert set(groups.values()) >= {"embeddings", "attention", "mlp", "norms"}
    roles = module_roles(model)
    assert all(name in dict(model.named_modules()) for name in roles)


def test_llama_family_aliases_and_unknown_models(tiny_tokenizer):
    mistral = AutoModelForCausalLM.from_config(MistralConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2))
    assert architecture_of(mistral).gated_mlp and mlp_parts(mistral)[0][2] is mistral.model.layers[0].mlp.down_proj
    mistral.config.model_type = "mystery"
    with pytest.raises(ValueError, match="'mystery' is not a registered decoder architecture.*register_architecture"):
        blocks(mistral)
