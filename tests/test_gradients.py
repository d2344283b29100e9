"""Per-example gradients and their cosines against a batch-size-1 loop of ``loss.backward()``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_model, loop_gradients

from iml_hf.data.tokenization import tokenize_corpus
from iml_hf.measure.gradients import (
    ExampleBatch,
    gradient_cosines_by_group,
    mean_gradient,
    pair_cosines,
    pair_inner_products,
    parameter_groups,
    per_example_gradients,
    trainable_parameters,
)

MODELS = {
    "gpt2": {"architecture": "gpt2"},
    "llama": {"architecture": "llama"},
    "llama-untied": {"architecture": "llama", "tie_word_embeddings": False},
    "gpt_neox": {"architecture": "gpt_neox", "tie_word_embeddings": False},
    "gpt2-attention-only": {"architecture": "gpt2", "attention_only": True},
}
PAIRS = [(0, 1), (2, 3), (0, 5), (4, 4), (7, 11), (10, 3), (12, 0)]


@pytest.fixture(scope="module")
def batch(tiny_corpus, tiny_tokenizer) -> ExampleBatch:
    """Definitions, questions and pretraining pairs of different lengths, right-padded."""
    train = tokenize_corpus(tiny_corpus, tiny_tokenizer)["train"]
    rows = [train[i] for i in range(0, len(train), 7)][:13]
    assert len({len(r["input_ids"]) for r in rows}) > 1  # padding is exercised
    return ExampleBatch.from_rows(rows, tiny_tokenizer.pad_token_id)


def flat(grads: dict[str, torch.Tensor], names) -> torch.Tensor:
    return torch.cat([grads[n].flatten(1) for n in names], dim=1)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_vmap_gradients_match_batch_size_one_loop(name, batch, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, **MODELS[name])
    reference = loop_gradients(model, batch)
    vectorized = per_example_gradients(model, batch, chunk_size=4)
    assert set(vectorized) == set(reference)
    for n in reference:
        assert (vectorized[n] - reference[n]).abs().max() < 1e-5, n
    assert any(reference[n].abs().max() > 1e-3 for n in reference)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["factored", "vmap"])
def test_pair_inner_products_match_loop(name, method, batch, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, **MODELS[name])
    reference = loop_gradients(model, batch)
    dots, squares = pair_inner_products(model, batch, PAIRS, method=method, chunk_size=3)
    for n, g in reference.items():
        g = g.flatten(1)
        expected = torch.stack([g[i] @ g[j] for i, j in PAIRS])
        scale = expected.abs().max().clamp(min=1)
        assert ((dots[n] - expected).abs().max() / scale) < 1e-5, n
        used = sorted({i for pair in PAIRS for i in pair})
        assert torch.allclose(squares[n][used], (g[used] ** 2).sum(1), rtol=1e-5, atol=1e-7), n


@pytest.mark.parametrize("name", ["gpt2", "llama-untied", "gpt2-attention-only"])
def test_pair_cosines_match_independent_computation(name, batch, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, **MODELS[name])
    reference = loop_gradients(model, batch)
    groups = parameter_groups(model)
    cosines = pair_cosines(model, batch, PAIRS, chunk_size=4)
    assert set(cosines) == {"all", *groups.values()}
    for group, values in cosines.items():
        g = flat(reference, [n for n in reference if group == "all" or groups[n] == group])
        expected = torch.stack([F.cosine_similarity(g[i], g[j], dim=0) for i, j in PAIRS])
        assert torch.allclose(values, expected, atol=1e-5), group
    assert torch.allclose(cosines["all"][3], torch.tensor(1.0), atol=1e-5)  # the pair (4, 4)


def test_tied_weights_are_counted_once(tiny_tokenizer):
    tied = build_tiny_model(tiny_tokenizer, architecture="gpt2")
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert "lm_head.weight" not in trainable_parameters(tied)
    assert "unembedding" not in parameter_groups(tied).values()
    untied = build_tiny_model(tiny_tokenizer, architecture="llama", tie_word_embeddings=False)
    groups = parameter_groups(untied)
    assert groups["lm_head.weight"] == "unembedding" and groups["model.embed_tokens.weight"] == "embeddings"
    assert groups["model.layers.0.self_attn.q_proj.weight"] == "attention"
    assert groups["model.layers.0.mlp.up_proj.weight"] == "mlp"
    assert groups["model.norm.weight"] == "norms"


def test_gradients_are_taken_in_eval_mode_and_training_mode_is_restored(batch, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, architecture="gpt2", dropout=0.5)
    model.train()
    first = per_example_gradients(model, batch.select([0, 1]))
    dots, _ = pair_inner_products(model, batch, [(0, 1)])
    assert model.training
    second = per_example_gradients(model, batch.select([0, 1]))
    reference = loop_gradients(model, batch.select([0, 1]))  # eval mode: no dropout
    for n in reference:
        assert torch.equal(first[n], second[n])
        assert (first[n] - reference[n]).abs().max() < 1e-5
    expected = flat(reference, list(reference))
    assert torch.allclose(sum(dots.values()), expected[0] @ expected[1], rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())  # the model's .grad is left alone


def test_mean_gradient_and_group_cosines(batch, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, architecture="llama", tie_word_embeddings=False)
    reference = loop_gradients(model, batch)
    first = mean_gradient(model, batch.select(range(0, 6)), chunk_size=4)
    second = mean_gradient(model, batch.select(range(6, 13)))
    for n in reference:
        assert torch.allclose(first[n], reference[n][:6].mean(0), atol=1e-6)
    cosines = gradient_cosines_by_group(first, second, model)
    groups = parameter_groups(model)
    for group, value in cosines.items():
        names = [n for n in reference if group == "all" or groups[n] == group]
        a = torch.cat([reference[n][:6].mean(0).flatten() for n in names])
        b = torch.cat([reference[n][6:].mean(0).flatten() for n in names])
        assert value == pytest.approx(F.cosine_similarity(a, b, dim=0).item(), abs=1e-5)


def test_unknown_method_is_a_clear_error(batch, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer)
    with pytest.raises(ValueError, match="use one of"):
        pair_inner_products(model, batch, [(0, 1)], method="loop")


def test_factored_method_refuses_modules_it_cannot_replay(batch, tiny_tokenizer):
    """A module with its own parameters that takes a second input cannot be re-run on its first
    input alone: the factored method says so instead of returning wrong gradients."""

    class Gain(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(width))

        def forward(self, x, gain=1.0):
            return x * self.weight * gain

    class NormThenGain(torch.nn.Module):
        def __init__(self, norm, width):
            super().__init__()
            self.norm, self.gain = norm, Gain(width)

        def forward(self, x):
            return self.gain(self.norm(x), gain=2.0)

    model = build_tiny_model(tiny_tokenizer, architecture="gpt2")
    model.transformer.h[0].ln_1 = NormThenGain(model.transformer.h[0].ln_1, 16)
    with pytest.raises(ValueError, match="use method='vmap'"):
        pair_inner_products(model, batch, [(0, 1)])
    dots, _ = pair_inner_products(model, batch, [(0, 1)], method="vmap")
    assert "transformer.h.0.ln_1.gain.weight" in dots
