"""The paper's linear model (eqs. 10-12) and Proposition 1, against closed forms and direct computations."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from iml_hf.analysis.linear_model import (
    LinearModelTable,
    condition_terms,
    gpt2_block_weights,
    linear_layer_matrices,
    mhsa_matrices,
    proposition_one,
    unsupported_reason,
)

D, HEADS = 8, 2


def gpt2_block(seed: int = 0):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=1, n_embd=D, n_head=HEADS, n_inner=4 * D, vocab_size=10, n_positions=16)
    return GPT2LMHeadModel(config).eval().transformer.h[0]


def hand_built(attention: float, ffn_in: float, ffn_out: float):
    """A GPT-2 block with W_Q = W_K = W_V = attention * I, W_O = I, W_1 = ffn_in * [I; 0], W_2 =
    ffn_out * [I, 0] and random biases and layer norms (all of which the linear model drops)."""
    block = gpt2_block()
    eye = torch.eye(D)
    with torch.no_grad():
        block.attn.c_attn.weight.copy_(attention * torch.cat([eye, eye, eye], dim=1))  # Conv1D: (in, out)
        block.attn.c_proj.weight.copy_(eye)
        block.mlp.c_fc.weight.zero_()
        block.mlp.c_fc.weight[:, :D] = ffn_in * eye
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.weight[:D] = ffn_out * eye
    return block


def head_blocks(matrix: torch.Tensor) -> torch.Tensor:
    """The block-diagonal part of ``matrix``, one block per head's coordinates."""
    out = torch.zeros_like(matrix)
    size = D // HEADS
    for h in range(HEADS):
        part = slice(h * size, (h + 1) * size)
        out[part, part] = matrix[part, part]
    return out


@pytest.mark.parametrize(("attention", "ffn_in", "ffn_out"), [(0.0, 0.0, 0.0), (1.0, 0.0, 3.0), (0.5, 2.0, -0.25)])
def test_linear_model_of_a_hand_built_block_has_its_closed_form(attention, ffn_in, ffn_out):
    z = torch.randn(6, D, dtype=torch.float64)
    positions = torch.tensor([0, 3, 5])
    got = linear_layer_matrices(gpt2_block_weights(hand_built(attention, ffn_in, ffn_out)), z, positions)
    eye = torch.eye(D, dtype=torch.float64)
    for n, w in zip(positions.tolist(), got):
        gram = z[: n + 1].T @ z[: n + 1]  # sum_{i<=n} z_i z_i^T
        # W_MHSA = sum_h W_O^h W_V^h C W_K^hT W_Q^h = attention^3 * blockdiag_h(C); W_FFN = ffn_in * ffn_out * I
        expected = (1 + ffn_in * ffn_out) * (eye + attention**3 * head_blocks(gram))
        assert torch.allclose(w, expected, atol=1e-10)
    if attention == ffn_in == ffn_out == 0.0:
        assert torch.equal(got, eye.expand(3, D, D))


def test_eq10_equals_a_direct_linear_attention_forward():
    """The block's own projections, biases zeroed, run as causal linear attention (no softmax,
    no scale) per head: the output at n must be W_MHSA(n) z_n."""
    block = gpt2_block(seed=3).double()
    with torch.no_grad():
        block.attn.c_attn.bias.zero_()
        block.attn.c_proj.bias.zero_()
    z = torch.randn(7, D, dtype=torch.float64)
    q, k, v = block.attn.c_attn(z).split(D, dim=-1)
    q, k, v = (x.reshape(7, HEADS, D // HEADS) for x in (q, k, v))
    scores = torch.einsum("nhd,ihd->hni", q, k).tril()  # q_n . k_i for i <= n
    direct = block.attn.c_proj(torch.einsum("hni,ihd->nhd", scores, v).reshape(7, D))
    positions = torch.arange(7)
    w = mhsa_matrices(gpt2_block_weights(block), z, positions)
    assert torch.allclose((w @ z[..., None])[..., 0], direct, atol=1e-10)
    # and eq. 11: W_FFN z is the MLP without biases or activation
    with torch.no_grad():
        block.mlp.c_fc.bias.zero_()
        block.mlp.c_proj.bias.zero_()
    ffn = gpt2_block_weights(block).ffn
    assert torch.allclose(z @ ffn.T, block.mlp.c_proj(block.mlp.c_fc(z)), atol=1e-10)


def test_proposition_one_agrees_with_the_norm_on_random_matrices():
    torch.manual_seed(0)
    w = torch.randn(200, D, D, dtype=torch.float64) / D**0.5 * torch.rand(200, 1, 1, dtype=torch.float64) * 2
    x = torch.randn(200, D, dtype=torch.float64)
    result = proposition_one(w, x)
    direct = (w @ x[..., None])[..., 0].norm(dim=-1) >= x.norm(dim=-1)
    assert torch.equal(result.condition, direct) and torch.equal(result.norm_not_decreased, direct)
    assert 0 < direct.double().mean() < 1  # both outcomes occur
    assert torch.allclose(result.weighted, (w @ x[..., None])[..., 0].square().sum(-1))
    # known cases: a contraction fails, an expansion and the identity (equality) pass
    known = torch.stack([0.5 * torch.eye(D), 2 * torch.eye(D), torch.eye(D)]).double()
    assert proposition_one(known, torch.randn(3, D)).condition.tolist() == [False, True, True]
    assert proposition_one(known, torch.randn(3, D)).stretches_every_direction.tolist() == [False, True, True]


def test_b_is_u_inverse_x_the_reading_the_proof_needs():
    """With a repeated eigenvalue, a non-orthogonal eigenbasis U still diagonalizes the Gram
    matrix; b = U^-1 x keeps the condition equal to |Wx|^2 >= |x|^2, b = U^T x does not."""
    w = torch.diag(torch.tensor([2.0, 2.0, 0.1], dtype=torch.float64))
    gram = w.T @ w
    u = torch.tensor([[1.0, 5.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    eigenvalues = torch.tensor([4.0, 4.0, 0.01], dtype=torch.float64)
    assert torch.allclose(u @ torch.diag(eigenvalues) @ torch.linalg.inv(u), gram)
    x = torch.tensor([0.3, -1.0, 1.0], dtype=torch.float64)
    weighted, plain = condition_terms(eigenvalues, u, x)
    assert weighted == pytest.approx(float((w @ x).square().sum())) and plain == pytest.approx(float(x @ x))
    a = u.T @ x
    transposed_reading = (eigenvalues * a * a).sum(), (a * a).sum()
    assert transposed_reading[0] != pytest.approx(float((w @ x).square().sum()))


def direct_linear_layer(block, z: torch.Tensor) -> torch.Tensor:
    """Eq. 12 run forward with the block's own modules: no layer norm, biases, softmax, scale or
    activation; z (T, d) -> the linear layer's output at every position."""
    attn, mlp = block.attn.double(), block.mlp.double()
    with torch.no_grad():
        q, k, v = (attn.c_attn(z) - attn.c_attn.bias).split(D, dim=-1)
        q, k, v = (x.reshape(len(z), HEADS, D // HEADS) for x in (q, k, v))
        mixed = torch.einsum("hni,ihd->nhd", torch.einsum("nhd,ihd->hni", q, k).tril(), v).reshape(len(z), D)
        h = z + attn.c_proj(mixed) - attn.c_proj.bias
        return h + (mlp.c_proj(mlp.c_fc(h) - mlp.c_fc.bias) - mlp.c_proj.bias)


def test_table_on_a_gpt2_stack_and_skips_elsewhere():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=D, n_head=HEADS, vocab_size=10, n_positions=16)).eval()
    ids = torch.randint(0, 10, (1, 9))
    with torch.no_grad():
        states = [h[0] for h in model(ids, output_hidden_states=True).hidden_states[:3]]
    table = LinearModelTable(model.transformer.h)
    table.add(states, [4, 6, 8])
    result = table.result()
    assert result["tokens"] == 3 and result["table2"]["matrices"] == 6  # layers 1 .. L-1 = 2 layers x 3 tokens
    assert all(layer["agreement"] == 1.0 for layer in result["layers"])
    for block, z, layer in zip(model.transformer.h, states, result["layers"]):
        ratios = direct_linear_layer(block, z.double())[[4, 6, 8]].norm(dim=-1) / z[[4, 6, 8]].double().norm(dim=-1)
        assert layer["proposition_1"] == pytest.approx(float((ratios >= 1).double().mean()))
        assert layer["median_norm_ratio"] == pytest.approx(float(ratios.median()), rel=1e-9)
    shares = [layer["proposition_1"] for layer in result["layers"][:2]]
    assert result["table2"]["proposition_1"] == pytest.approx(sum(shares) / 2)
    llama = LlamaForCausalLM(
        LlamaConfig(num_hidden_layers=1, hidden_size=D, num_attention_heads=2, intermediate_size=16, vocab_size=10)
    )
    assert "gated FFN" in unsupported_reason(llama.model.layers[0])
    neox = GPTNeoXForCausalLM(
        GPTNeoXConfig(num_hidden_layers=1, hidden_size=D, num_attention_heads=2, intermediate_size=16, vocab_size=10)
    )
    assert "rotary" in LinearModelTable(neox.gpt_neox.layers).result()["skipped"]
