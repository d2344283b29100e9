"""Layer-wise analysis: the last layer re-applied reproduces the logits; norm shares on a hand-built model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from iml_hf.analysis.layers import LayerAccess, batches, last_layer, norm_statistics, run_layers

CONFIGS = {
    "gpt2": (
        GPT2LMHeadModel,
        GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=40, n_positions=32, bos_token_id=0, eos_token_id=0),
    ),
    "llama": (
        LlamaForCausalLM,
        LlamaConfig(
            num_hidden_layers=3,
            hidden_size=16,
            num_attention_heads=2,
            intermediate_size=32,
            vocab_size=40,
            max_position_embeddings=32,
        ),
    ),
    "gpt_neox": (
        GPTNeoXForCausalLM,
        GPTNeoXConfig(
            num_hidden_layers=3,
            hidden_size=16,
            num_attention_heads=2,
            intermediate_size=32,
            vocab_size=40,
            max_position_embeddings=32,
        ),
    ),
}
SEQUENCES = [[1, 5, 7, 9, 3, 2, 8], [4, 4, 6], [3, 9, 12, 15, 1, 2, 30, 31, 5]]


def tiny(name: str):
    cls, config = CONFIGS[name]
    torch.manual_seed(0)
    return cls(config).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_last_layer_on_its_own_input_reproduces_the_logits(name):
    model = tiny(name)
    batch = next(batches(SEQUENCES, 3, 0))
    access = LayerAccess.of(model)
    call = {}
    handle = access.layers[-1].register_forward_pre_hook(
        lambda m, args, kwargs: call.update(args=args, kwargs=dict(kwargs)), with_kwargs=True
    )
    with torch.no_grad():
        out = model(
            input_ids=batch.input_ids,
            attention_mask=torch.ones_like(batch.input_ids),
            output_hidden_states=True,
            use_cache=False,
        )
        handle.remove()
        last_input = out.hidden_states[len(access.layers) - 1]
        logits = access.lm_head(access.final_norm(last_layer(access, last_input, call)))
    assert torch.equal(logits, out.logits)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_inner_loss_of_the_last_input_is_the_model_loss(name):
    model = tiny(name)
    batch = next(batches(SEQUENCES, 3, 0))
    stats = run_layers(model, batch)
    assert stats.inner_loss.shape == (sum(len(s) - 1 for s in SEQUENCES), 3)
    expected = []
    for seq in SEQUENCES:  # one sequence at a time, no padding: an independent computation
        ids = torch.tensor([seq])
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        expected.append(F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none"))
    assert torch.allclose(stats.inner_loss[:, -1], torch.cat(expected), atol=1e-5)
    assert sorted(stats.positions.tolist()) == sorted(t for s in SEQUENCES for t in range(len(s) - 1))
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([SEQUENCES[0]]), output_hidden_states=True).hidden_states
    first = stats.norms[: len(SEQUENCES[0]) - 1]  # the first sequence's tokens come first
    assert torch.allclose(first[:, 0], hidden[0][0, :-1].norm(dim=-1), atol=1e-5)
    assert torch.allclose(first[:, 2], hidden[2][0, :-1].norm(dim=-1), atol=1e-5)
    assert not torch.allclose(stats.inner_loss[:, 0], stats.inner_loss[:, -1])


def hand_built(biases: list[float], first_position_offset: float) -> GPT2LMHeadModel:
    """A GPT-2 whose blocks add only a constant ``biases[l] * b`` to the residual stream; token
    embeddings are zero and position 0 starts at ``first_position_offset * b``."""
    config = GPT2Config(
        n_layer=len(biases), n_embd=8, n_head=2, vocab_size=20, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config).eval()
    b = torch.ones(8)
    with torch.no_grad():
        model.transformer.wte.weight.zero_()
        model.transformer.wpe.weight.zero_()
        model.transformer.wpe.weight[0] = first_position_offset * b
        for block, scale in zip(model.transformer.h, biases):
            for linear in (block.attn.c_proj, block.mlp.c_proj):
                linear.weight.zero_()
                linear.bias.zero_()
            block.mlp.c_proj.bias.copy_(scale * b)
    return model


def test_table1_on_a_hand_built_model():
    # positions > 0: norms after the embeddings and layers 1..4 are 0, 1, 2, 3, 4 (x |b|): never
    # decreasing; position 0 starts at -10 b: 10, 9, 8, 7, 6: decreasing at every step.
    model = hand_built([1.0, 1.0, 1.0, 1.0], first_position_offset=-10.0)
    batch = next(batches([[1, 2, 3, 4, 5], [6, 7, 8]], 2, 0))
    stats = run_layers(model, batch)
    expected = torch.tensor([[0.0, 1, 2, 3, 4]]) * 8**0.5
    assert torch.allclose(stats.norms[stats.positions > 0], expected.expand(4, -1), atol=1e-5)
    shares = norm_statistics(stats.norms, stats.positions, min_position=1)
    table = shares["table1"]  # embeddings .. layer 3: 3 pairs, chance 1/8
    assert table["pairs_per_trajectory"] == 3 and table["chance_sequence_level"] == 1 / 8
    assert (table["tokens"], table["sequence_level"], table["pair_level"]) == (4, 1.0, 1.0)
    assert shares["variants"]["all_positions"] == {"tokens": 6, "sequence_level": 4 / 6, "pair_level": 12 / 18}
    assert shares["variants"]["with_last_layer"]["tokens"] == 4
    # a dip in the middle (layer 3 subtracts): 0, 1, 2, 1 -> one pair of three decreases
    dip = hand_built([1.0, 1.0, -1.0, 1.0], first_position_offset=0.0)
    table = norm_statistics(*(lambda s: (s.norms, s.positions))(run_layers(dip, batch)), min_position=1)["table1"]
    assert table["sequence_level"] == 0.0 and table["pair_level"] == pytest.approx(2 / 3)


def test_lm_head_in_position_chunks_gives_the_same_losses(monkeypatch):
    """The streaming path: with a logits budget of one position at a time, every layer's inner
    loss is what the whole-sequence LM head gives."""
    import iml_hf.analysis.layers as layers

    model = tiny("llama")
    batch = next(batches(SEQUENCES, 3, 0))
    whole = run_layers(model, batch)
    monkeypatch.setattr(layers, "LOGITS_BUDGET", 3 * 40)  # batch 3 x vocabulary 40: one position per chunk
    chunked = run_layers(model, batch)
    assert torch.allclose(whole.inner_loss, chunked.inner_loss, atol=1e-6)
    assert torch.equal(whole.norms, chunked.norms)
