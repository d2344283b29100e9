"""Layer-wise "inner optimization" analysis of a causal LM (Wu & Varshney, ACL Findings 2024).

For every token: its representation after each layer (the residual stream), the approximate
inner loss of each layer (eq. 14: that representation passed through the *last* transformer
layer, the final norm and the LM head, scored against the true next token) and the L2 norm of
each representation. Works in batches; only one layer's logits exist at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iml_hf.architectures import blocks, final_norm


@dataclass
class LayerAccess:
    """The pieces of a decoder-only model the analysis needs (from ``iml_hf.architectures``)."""

    layers: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Module

    @classmethod
    def of(cls, model: nn.Module) -> LayerAccess:
        """The blocks, final norm and LM head of any architecture ``iml_hf.architectures`` knows."""
        return cls(blocks(model), final_norm(model), model.get_output_embeddings())


@dataclass
class Batch:
    """Right-padded token ids and which positions have a real next token to predict."""

    input_ids: Tensor  # (B, T)
    lengths: Tensor  # (B,)

    @property
    def scored(self) -> Tensor:
        """(B, T-1) mask of positions t whose next token t+1 is real."""
        t = torch.arange(self.input_ids.shape[1] - 1)
        return t[None, :] < (self.lengths[:, None] - 1)


@dataclass
class LayerStats:
    """Per scored token (flattened over the batch): position, inner loss per layer (N, L) and the
    norm of the representation after every layer (N, L + 1, index 0 = the embedding output)."""

    positions: Tensor
    inner_loss: Tensor
    norms: Tensor
    trajectories: Tensor | None = None  # (N, L + 1, d) representations, kept only when asked
    extra: dict[str, Any] = field(default_factory=dict)


def batches(sequences: list[list[int]], batch_size: int, pad_token_id: int) -> Iterator[Batch]:
    """Sequences in right-padded batches, in order."""
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = torch.tensor(s)
        yield Batch(ids, torch.tensor([len(s) for s in chunk]))


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def run_layers(model: nn.Module, batch: Batch, keep_trajectories: bool = False) -> LayerStats:
    """One forward pass with every hidden state, then the last layer re-applied to each of them.

    ``hidden_states[l]`` (l = 0 .. L-1) is the input of layer l+1, i.e. the representation after
    layer l (0 = embeddings); re-applying the last layer to ``hidden_states[L-1]`` reproduces the
    model's own logits exactly, which is the test of this construction.
    """
    access = LayerAccess.of(model)
    last = access.layers[-1]
    device = next(model.parameters()).device
    ids = batch.input_ids.to(device)
    call: dict[str, Any] = {}

    def capture(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        call["args"], call["kwargs"], call["output"] = args, dict(kwargs), _first(output)

    handle = last.register_forward_hook(capture, with_kwargs=True)
    try:
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    hidden = out.hidden_states[: len(access.layers)]  # the last entry is after the final norm
    targets = ids[:, 1:]
    scored = batch.scored.to(device)
    losses = []
    for h in hidden:
        logits = final_logits(access, h, call)
        token_loss = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
        losses.append(token_loss[scored])
    states = [*hidden, call["output"]]  # the last layer's own output, from the real forward pass
    norms = torch.stack([s[:, :-1][scored].float().norm(dim=-1) for s in states], dim=1)
    positions = torch.arange(ids.shape[1] - 1, device=device).expand_as(scored)[scored]
    trajectories = torch.stack([s[:, :-1][scored].float() for s in states], dim=1) if keep_trajectories else None
    return LayerStats(positions.cpu(), torch.stack(losses, dim=1).cpu(), norms.cpu(),
                      None if trajectories is None else trajectories.cpu())


def final_logits(access: LayerAccess, hidden: Tensor, call: dict[str, Any]) -> Tensor:
    """The last layer (with the arguments of its real call), the final norm and the LM head
    applied to ``hidden`` in place of the last layer's real input."""
    args, kwargs = call["args"], call["kwargs"]
    if args:
        y = access.layers[-1](hidden, *args[1:], **kwargs)
    else:
        y = access.layers[-1](**{**kwargs, "hidden_states": hidden})
    return access.lm_head(access.final_norm(_first(y)))


def _shares(body: Tensor) -> dict[str, Any]:
    if body.shape[1] < 2 or body.shape[0] == 0:
        return {"tokens": int(body.shape[0]), "sequence_level": None, "pair_level": None}
    steps = body[:, 1:] >= body[:, :-1]
    return {
        "tokens": int(body.shape[0]),
        "sequence_level": float(steps.all(dim=1).double().mean()),
        "pair_level": float(steps.double().mean()),
    }


def norm_statistics(norms: Tensor, positions: Tensor) -> dict[str, Any]:
    """Shares of non-decreasing norm trajectories: sequence level (the norm never decreases along
    the trajectory) and pair level (over neighbouring layers), for all tokens and without position 0.

    The trajectory is the representation after each layer except the last (columns 1 .. L-1 of
    ``norms``, whose column 0 is the embedding output and column L the last layer's output);
    ``with_embeddings`` also starts from the embedding output.
    """
    out: dict[str, Any] = {"layers_compared": norms.shape[1] - 2}
    not_first = positions > 0
    out["all_positions"] = _shares(norms[:, 1:-1])
    out["without_position_0"] = _shares(norms[not_first][:, 1:-1])
    out["with_embeddings"] = {"all_positions": _shares(norms[:, :-1]), "without_position_0": _shares(norms[not_first][:, :-1])}
    return out
