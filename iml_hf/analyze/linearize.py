"""Linearized GPT-2 layers: does a layer, linearized around a token, increase that token's norm?

RECONSTRUCTION, NOT CHECKED AGAINST THE PAPER: Wu & Varshney's eqs. 10-12 and Proposition 1 were
not available offline, so this module implements the natural per-sample linearization and reports
the conditions under which the linearized layer increases the representation norm; see
docs/layer-analysis.md.

For token t of a sequence and a GPT-2 block, ``f_t(x)`` is the block's output at position t when
that token's input representation is ``x`` and the other positions' keys and values are fixed
(causal attention: only positions < t matter). Its Jacobian ``A_t = d f_t / d x`` at the actual
input ``h_t`` is the linearized layer (``A_t = I + J_t`` with ``J_t`` the Jacobian of the residual
update). Reported, per layer, the share of tokens for which

* ``all_directions``: ``A_t^T A_t - I`` is positive semi-definite (every singular value of
  ``A_t`` >= 1: the linearized layer never shrinks a vector);
* ``symmetric_update``: ``J_t + J_t^T`` is positive semi-definite (a sufficient condition for the
  same, since ``A^T A - I = J + J^T + J^T J``);
* ``this_token``: ``|A_t h_t| >= |h_t|`` (the linearized layer does not shrink this token).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import jacrev

from iml_hf.analyze.layers import LayerAccess, batches

TOLERANCE = 1e-5


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(..., d) -> (..., heads, head_dim)."""
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def block_context(block: nn.Module, hidden: Tensor) -> tuple[Tensor, Tensor]:
    """Keys and values (T, heads, head_dim) that a GPT-2 block computes from its input (T, d)."""
    d = hidden.shape[-1]
    _, k, v = block.attn.c_attn(block.ln_1(hidden)).split(d, dim=-1)
    return _heads(k, block.attn.num_heads), _heads(v, block.attn.num_heads)


def token_output(block: nn.Module, x: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """A GPT-2 block's output at one position as a function of that token's input ``x`` (d,),
    given the keys and values of the earlier positions (t, heads, head_dim)."""
    attn, d = block.attn, x.shape[-1]
    q, k, v = attn.c_attn(block.ln_1(x)).split(d, dim=-1)
    q, k, v = (_heads(z, attn.num_heads) for z in (q, k, v))
    all_keys = torch.cat([keys, k[None]], dim=0)  # (t + 1, heads, head_dim)
    all_values = torch.cat([values, v[None]], dim=0)
    scores = torch.einsum("hd,shd->hs", q, all_keys)
    if attn.scale_attn_weights:
        scores = scores / math.sqrt(q.shape[-1])
    if getattr(attn, "scale_attn_by_inverse_layer_idx", False):
        scores = scores / float(attn.layer_idx + 1)
    weights = scores.softmax(dim=-1)
    mixed = torch.einsum("hs,shd->hd", weights, all_values).reshape(d)
    h = x + attn.c_proj(mixed)
    return h + block.mlp(block.ln_2(h))


def linearized_layer(
    block: nn.Module, hidden: Tensor, t: int, context: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """``A_t``: the Jacobian (d, d) of the block's output at position t w.r.t. that token's input;
    ``context`` is ``block_context(block, hidden)`` when the caller already has it."""
    keys, values = context if context is not None else block_context(block, hidden)
    return jacrev(lambda x: token_output(block, x, keys[:t], values[:t]))(hidden[t])


def conditions(a: Tensor, h: Tensor) -> dict[str, bool]:
    """Which norm-increase conditions the linearized layer ``a`` meets at representation ``h``."""
    a = a.double()
    h = h.double()
    eye = torch.eye(a.shape[0], dtype=a.dtype)
    j = a - eye
    scale = max(1.0, float(torch.linalg.matrix_norm(a, ord=2)) ** 2)
    return {
        "all_directions": bool(torch.linalg.eigvalsh(a.T @ a - eye).min() >= -TOLERANCE * scale),
        "symmetric_update": bool(torch.linalg.eigvalsh(j + j.T).min() >= -TOLERANCE * scale),
        "this_token": bool((a @ h).norm() >= h.norm() * (1 - TOLERANCE)),
    }


@torch.no_grad()
def _hidden_states(model: nn.Module, ids: Tensor) -> tuple[Tensor, ...]:
    mask = torch.ones_like(ids)
    return model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states


def linearized_condition_shares(model: nn.Module, sequences: list[list[int]], args: argparse.Namespace) -> dict[str, Any]:
    """Per layer, the share of the first ``linearize_tokens`` tokens (positions >= ``min_position``)
    whose linearized layer meets each condition; only for GPT-2 blocks."""
    access = LayerAccess.of(model)
    if type(access.layers[0]).__name__ != "GPT2Block":
        return {"skipped": f"linearization is implemented for GPT-2 blocks, not {type(access.layers[0]).__name__}"}
    device = next(model.parameters()).device
    counts = [{"all_directions": 0, "symmetric_update": 0, "this_token": 0} for _ in access.layers]
    seen = 0
    for batch in batches(sequences, 1, 0):
        ids = batch.input_ids.to(device)
        hidden = _hidden_states(model, ids)
        positions = list(range(args.min_position, ids.shape[1]))[: args.linearize_tokens - seen]
        for index, block in enumerate(access.layers):
            h = hidden[index][0]
            context = block_context(block, h)  # keys and values of the sequence, once per layer
            for t in positions:
                with torch.enable_grad():
                    a = linearized_layer(block, h, t, context).detach().cpu()
                for key, met in conditions(a, h[t].cpu()).items():
                    counts[index][key] += met
        seen += len(positions)
        if seen >= args.linearize_tokens:
            break
    return {
        "reconstruction": "per-token Jacobian of each GPT-2 block (not checked against the paper's eqs. 10-12)",
        "tokens_per_layer": seen,
        "shares": [{key: (value / seen if seen else None) for key, value in layer.items()} for layer in counts],
    }
