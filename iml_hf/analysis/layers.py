"""Layer-wise "inner optimization" analysis of a causal LM (Wu & Varshney, ACL Findings 2024).

For every token: its representation after each layer (the residual stream), the approximate
inner loss of each layer (eq. 14: that representation passed through the *last* transformer
layer, the final norm and the LM head, scored against the true next token) and the L2 norm of
each representation. Works in batches; only one layer's logits exist at a time.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iml_hf.models.architectures import blocks, final_norm

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class LayerAccess:
    """The pieces of a decoder-only model the analysis needs (from ``iml_hf.models.architectures``)."""

    layers: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Linear

    @classmethod
    def of(cls, model: PreTrainedModel) -> LayerAccess:
        """The blocks, final norm and LM head of any architecture ``iml_hf.models.architectures`` knows."""
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


#: Logit elements (batch x positions x vocabulary) computed at once; the LM head is applied to
#: position chunks of this size so that a large vocabulary's logits never all sit in memory.
LOGITS_BUDGET = 1 << 25


def input_device(model: PreTrainedModel) -> torch.device:
    """Where the token ids go: the input embedding's device (differs from the first parameter's
    under ``device_map="auto"``)."""
    return model.get_input_embeddings().weight.device  # type: ignore[return-value]  # transformers types the embedding as a bare nn.Module


@torch.no_grad()
def run_layers(model: PreTrainedModel, batch: Batch) -> LayerStats:
    """One forward pass with every hidden state, then the last layer re-applied to each of them.

    ``hidden_states[l]`` (l = 0 .. L-1) is the input of layer l+1, i.e. the representation after
    layer l (0 = embeddings); re-applying the last layer to ``hidden_states[L-1]`` reproduces the
    model's own logits exactly, which is the test of this construction.
    """
    access = LayerAccess.of(model)
    last = access.layers[-1]
    ids = batch.input_ids.to(input_device(model))
    call: dict[str, Any] = {}

    def capture(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        call["args"], call["kwargs"], call["output"] = args, dict(kwargs), _first(output)

    handle = last.register_forward_hook(capture, with_kwargs=True)
    try:
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    hidden = out.hidden_states[: len(access.layers)]  # the last entry is after the final norm
    scored = batch.scored
    losses = [token_losses(access, h, call, ids, scored) for h in hidden]
    states = [*hidden, call["output"]]  # the last layer's own output, from the real forward pass
    norms = torch.stack([s[:, :-1].float().norm(dim=-1).cpu()[scored] for s in states], dim=1)
    positions = torch.arange(ids.shape[1] - 1).expand_as(scored)[scored]
    return LayerStats(positions, torch.stack(losses, dim=1), norms)


def token_losses(access: LayerAccess, hidden: Tensor, call: dict[str, Any], ids: Tensor, scored: Tensor) -> Tensor:
    """Cross-entropy of the next token at the scored positions when ``hidden`` replaces the last
    layer's input (eq. 14); the final norm and LM head run on chunks of positions."""
    final = access.final_norm(last_layer(access, hidden, call))
    width = final.shape[1] - 1
    step = max(1, LOGITS_BUDGET // (final.shape[0] * access.lm_head.weight.shape[0]))
    losses = []
    for start in range(0, width, step):
        logits = access.lm_head(final[:, start : min(start + step, width)]).float()
        targets = ids[:, start + 1 : start + 1 + logits.shape[1]].to(logits.device)
        losses.append(F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").cpu())
    return torch.cat(losses, dim=1)[scored]


def last_layer(access: LayerAccess, hidden: Tensor, call: dict[str, Any]) -> Tensor:
    """The last layer, with the arguments of its real call, applied to ``hidden`` in place of its
    real input."""
    args, kwargs = call["args"], call["kwargs"]
    if args:
        return _first(access.layers[-1](hidden, *args[1:], **kwargs))
    return _first(access.layers[-1](**{**kwargs, "hidden_states": hidden}))


def _shares(body: Tensor) -> dict[str, Any]:
    if body.shape[1] < 2 or body.shape[0] == 0:
        return {"tokens": int(body.shape[0]), "sequence_level": None, "pair_level": None}
    steps = body[:, 1:] >= body[:, :-1]
    return {
        "tokens": int(body.shape[0]),
        "sequence_level": float(steps.all(dim=1).double().mean()),
        "pair_level": float(steps.double().mean()),
    }


def norm_statistics(norms: Tensor, positions: Tensor, min_position: int) -> dict[str, Any]:
    """Table 1: shares of non-decreasing norm trajectories at the sequence level (the norm never
    decreases) and the pair level (neighbouring representations), with the chance level 2^-n.

    ``norms`` (N, L + 1) holds the norm after the embeddings (column 0) and after every layer. The
    paper's trajectory leaves the last layer out (Conjecture 4.1): columns 0 .. L-1, so n = L - 1
    pairs per trajectory (n = 11 for the paper's 12-layer count). Its tokens are those from
    ``min_position`` on, the paper's context filter. Variants (ours) follow under ``variants``.
    """
    layers = norms.shape[1] - 1
    kept = norms[positions >= min_position]
    table = _shares(kept[:, :layers])
    pairs = layers - 1
    return {
        "table1": {
            **table,
            "trajectory": f"embeddings .. layer {layers - 1}" if pairs else "embeddings only (one layer)",
            "pairs_per_trajectory": pairs,
            "chance_sequence_level": 2.0**-pairs if pairs > 0 else None,
            "chance_pair_level": 0.5,
            "min_position": min_position,
        },
        "variants": {
            "all_positions": _shares(norms[:, :layers]),
            "without_embeddings": _shares(kept[:, 1:layers]),
            "with_last_layer": _shares(kept),
        },
    }


def sample_tokens(lengths: list[int], min_position: int, count: int, seed: int) -> list[tuple[int, int]]:
    """A uniform random sample, without replacement and in random order, of ``count`` scored
    tokens ``(sequence index, position)`` at positions ``>= min_position`` of sequences of these
    lengths (a prefix of the sample is a smaller uniform sample)."""
    pool = [(i, t) for i, n in enumerate(lengths) for t in range(min_position, n - 1)]
    return random.Random(seed).sample(pool, min(count, len(pool)))


@torch.no_grad()
def layer_inputs(model: PreTrainedModel, sequence: list[int]) -> list[Tensor]:
    """The input of every layer for one sequence (embedding output, after layer 1 .. L-1), each
    (T, d) in the model's dtype on its device."""
    ids = torch.tensor([sequence], device=input_device(model))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, use_cache=False)
    return [h[0] for h in out.hidden_states[: len(blocks(model))]]
