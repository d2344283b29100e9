"""Linearized GPT-2 layers: the single-token block is exact, its Jacobian matches autograd on the
real block, and the conditions behave on matrices whose answer is known."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from iml_hf.analyze.linearize import block_context, conditions, linearized_layer, token_output


def _model():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=30, n_positions=16, bos_token_id=0, eos_token_id=0)).eval()


def test_single_token_block_matches_the_real_block():
    model = _model()
    ids = torch.tensor([[1, 4, 9, 2, 7, 3]])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        for index, block in enumerate(model.transformer.h):
            h = hidden[index][0]
            out = block(h[None])
            real = (out[0] if isinstance(out, tuple) else out)[0]
            keys, values = block_context(block, h)
            for t in range(len(h)):
                assert torch.allclose(token_output(block, h[t], keys[:t], values[:t]), real[t], atol=1e-5)


def test_jacobian_matches_autograd_on_the_real_block():
    model = _model()
    ids = torch.tensor([[1, 4, 9, 2, 7, 3]])
    with torch.no_grad():
        h = model(input_ids=ids, output_hidden_states=True).hidden_states[1][0]
    block, t = model.transformer.h[1], 4

    def real(x):
        replaced = torch.cat([h[:t], x[None], h[t + 1 :]])[None]
        out = block(replaced)
        return (out[0] if isinstance(out, tuple) else out)[0, t]

    expected = torch.autograd.functional.jacobian(real, h[t])
    assert torch.allclose(linearized_layer(block, h, t), expected, atol=1e-5)


def test_conditions_on_known_matrices():
    h = torch.randn(6)
    assert conditions(2 * torch.eye(6), h) == {"all_directions": True, "symmetric_update": True, "this_token": True}
    assert conditions(0.5 * torch.eye(6), h) == {"all_directions": False, "symmetric_update": False, "this_token": False}
    rotation = torch.linalg.qr(torch.randn(6, 6))[0]
    met = conditions(rotation, h)  # an orthogonal map keeps every norm: grows nowhere, shrinks nowhere
    assert met["all_directions"] and met["this_token"] and not met["symmetric_update"]
    stretch = torch.diag(torch.tensor([3.0, 1, 1, 1, 1, 0.5]))
    assert conditions(stretch, torch.tensor([1.0, 0, 0, 0, 0, 0]))["this_token"]
    assert not conditions(stretch, torch.tensor([0.0, 0, 0, 0, 0, 1]))["this_token"]
    assert not conditions(stretch, h)["all_directions"]
