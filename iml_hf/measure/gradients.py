"""Per-example gradients of the training loss and the cosines between them (gradient alignment).

Two exact methods, both in eval mode (dropout off), counting tied weights once and skipping frozen
parameters:

* ``vmap``: ``torch.func.vmap(grad(...))`` over ``functional_call``, chunked to bound memory; it
  materialises every example's gradient (the reference, and what per-example analyses use).
* ``factored``: one batched forward and backward per chunk. A linear or embedding weight's
  per-example gradient is the sum over positions of outer products (output gradient x input), so
  the inner product of two examples' gradients is a sum over position pairs and no per-example
  copy of a large matrix is formed (the identity behind ghost clipping). Parameters of other
  modules (norms) are small and are materialised with ``torch.func`` on their own module.

Batches are right-padded; with a causal model padding then never reaches a real position's
output, so no attention mask is needed and examples never interact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from transformers.pytorch_utils import Conv1D

from iml_hf.data.collators import PadCollator
from iml_hf.data.tokenization import IGNORE_INDEX
from iml_hf.models.architectures import is_registered, module_roles, role_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel

METHODS = ("factored", "vmap")
GROUPS = ("embeddings", "attention", "mlp", "norms", "unembedding", "other")


# ----------------------------------------------------------------------------- basics


def per_example_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Each example's training loss: mean next-token cross-entropy over its labelled tokens."""
    targets = labels[:, 1:]
    tokens = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counted = targets != IGNORE_INDEX
    return (tokens * counted).sum(1) / counted.sum(1).clamp(min=1)


def trainable_parameters(model: nn.Module) -> dict[str, Tensor]:
    """Name -> trainable parameter, each tied parameter once (under its first name)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def parameter_groups(model: PreTrainedModel) -> dict[str, str]:
    """Trainable parameter name -> group: embeddings, attention, mlp, norms, unembedding (an
    output embedding not tied to the input one) or other."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    input_weight = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    roles = module_roles(model) if is_registered(model) else {}  # unknown decoders: all blocks "other"
    names = {id(p): n for n, p in trainable_parameters(model).items()}
    groups: dict[str, str] = {}
    for module_name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            name = names.get(id(p))
            if name is None or name in groups:
                continue
            if output is not None and module is output and p is not input_weight:
                groups[name] = "unembedding"
            elif isinstance(module, nn.Embedding) or p is input_weight:
                groups[name] = "embeddings"
            else:
                groups[name] = role_of(module_name, roles) or "other"
    return groups


@dataclass
class ExampleBatch:
    """Right-padded token ids and labels (-100 where there is no loss) of some examples."""

    input_ids: Tensor
    labels: Tensor

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, list[int]]], pad_token_id: int) -> ExampleBatch:
        padded = PadCollator(pad_token_id)([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
        return cls(padded["input_ids"], padded["labels"])

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: Tensor | Sequence[int] | slice) -> ExampleBatch:
        return ExampleBatch(self.input_ids[index], self.labels[index])

    def model_inputs(self, device: torch.device) -> dict[str, Tensor | bool]:
        ids = self.input_ids.to(device)
        positions = torch.arange(ids.shape[1], device=device).expand_as(ids)  # per-example rows
        # All ones on purpose: right padding never reaches a real position of a causal model, and a
        # mask that is not per-example keeps the model's mask checks out of vmap's batching.
        mask = torch.ones(1, ids.shape[1], dtype=torch.long, device=device).expand(ids.shape[0], -1)
        return {"input_ids": ids, "position_ids": positions, "attention_mask": mask, "use_cache": False}


@contextmanager
def full_precision(model: nn.Module) -> Iterator[None]:
    """Run the model's own float32 ``forward``: under mixed precision, accelerate replaces
    ``model.forward`` by an autocast wrapper (an instance attribute, possibly wrapped once per
    stage); it is set aside here and put back afterwards, and any outer autocast is switched off."""
    wrapped = model.__dict__.pop("forward", None)
    device = next(model.parameters()).device.type
    try:
        with torch.autocast(device_type=device, enabled=False):
            yield
    finally:
        if wrapped is not None:
            model.__dict__["forward"] = wrapped


@contextmanager
def _eval_mode(model: PreTrainedModel, attention: str | None = None) -> Iterator[None]:
    """Eval mode (dropout off), float32, gradients on; optionally another attention implementation."""
    was_training = model.training
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    model.eval()
    try:
        if attention and previous and previous != attention:
            model.set_attn_implementation(attention)
        with full_precision(model), torch.enable_grad():
            yield
    finally:
        if attention and previous and previous != attention:
            model.set_attn_implementation(previous)
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------- vmap


def per_example_gradients(
    model: PreTrainedModel, batch: ExampleBatch, chunk_size: int | None = 32
) -> dict[str, Tensor]:
    """Every example's gradient of its own training loss: name -> tensor of shape (N, *param.shape)."""
    device = _device(model)
    params = {name: p.detach() for name, p in trainable_parameters(model).items()}

    def loss_of_one(weights: dict[str, Tensor], ids: Tensor, labels: Tensor) -> Tensor:
        inputs = ExampleBatch(ids[None], labels[None]).model_inputs(device)
        logits = functional_call(model, weights, args=(), kwargs=inputs).logits
        return per_example_loss(logits, labels[None])[0]

    with _eval_mode(model, attention="eager"):  # SDPA has no vmap batching rule on CPU (a slow loop)
        gradient = vmap(grad(loss_of_one), in_dims=(None, 0, 0), chunk_size=chunk_size)
        return gradient(params, batch.input_ids.to(device), batch.labels.to(device))


def mean_gradient(model: PreTrainedModel, batch: ExampleBatch, chunk_size: int = 256) -> dict[str, Tensor]:
    """Gradient of the mean of the examples' losses (each example weighted equally)."""
    params = trainable_parameters(model)
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    with _eval_mode(model):
        for start in range(0, len(batch), chunk_size):
            chunk = batch.select(slice(start, start + chunk_size))
            logits = model(**chunk.model_inputs(_device(model))).logits
            loss = per_example_loss(logits, chunk.labels.to(logits.device)).sum() / len(batch)
            for (name, _), g in zip(
                params.items(), torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            ):
                if g is not None:
                    total[name] += g
    return total


# ----------------------------------------------------------------------------- factored


@dataclass
class Outer:
    """Per-example gradient ``sum_t u[n, t] (x) v[n, t]``; ``u`` may be token ids (one-hot rows)."""

    u: Tensor  # (N, T, m) or (N, T) long
    v: Tensor  # (N, T, n)


@dataclass
class Dense:
    """Per-example gradient materialised: (N, *param.shape)."""

    g: Tensor


def _rows(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1, x.shape[-1])


def _capture(model: nn.Module, batch: ExampleBatch) -> dict[str, list[Outer | Dense]]:
    """Every trainable parameter's per-example gradient contributions, from one forward+backward."""
    names = {id(p): n for n, p in trainable_parameters(model).items()}
    calls: list[tuple[nn.Module, Tensor, Tensor]] = []  # (module, input, output)

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
        if not (isinstance(output, Tensor) and output.requires_grad):
            return
        if not isinstance(module, (nn.Linear, Conv1D, nn.Embedding)) and (len(args) != 1 or kwargs):
            raise ValueError(
                f"{type(module).__name__} has trainable parameters and takes more than one input; the "
                "factored method re-runs such modules on their first input only, so use method='vmap'"
            )
        calls.append((module, args[0].detach(), output))

    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in model.modules()
        if any(id(p) in names for p in m.parameters(recurse=False))
    ]
    try:
        logits = model(**batch.model_inputs(_device(model))).logits
    finally:
        for handle in handles:
            handle.remove()
    loss = per_example_loss(logits, batch.labels.to(logits.device)).sum()
    grads = torch.autograd.grad(loss, [out for _, _, out in calls], allow_unused=True)

    factors: dict[str, list[Outer | Dense]] = defaultdict(list)
    n = len(batch)
    for (module, x, out), g in zip(calls, grads):
        g = torch.zeros_like(out) if g is None else g.detach()
        if out.shape[0] != n:
            raise ValueError(
                f"module {type(module).__name__} returned a batch of {out.shape[0]} rows for {n} examples; "
                "its per-example gradients cannot be separated (use method='vmap')"
            )
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        if isinstance(module, (nn.Linear, Conv1D, nn.Embedding)):
            if weight is not None and id(weight) in names:
                if isinstance(module, nn.Embedding):
                    factors[names[id(weight)]].append(Outer(x.reshape(n, -1), _rows(g)))
                elif isinstance(module, nn.Linear):
                    factors[names[id(weight)]].append(Outer(_rows(g), _rows(x)))
                else:
                    factors[names[id(weight)]].append(Outer(_rows(x), _rows(g)))
            if isinstance(bias, Tensor) and id(bias) in names:
                factors[names[id(bias)]].append(Dense(_rows(g).sum(1)))
        else:
            for name, g_param in _module_gradients(module, x, g, names).items():
                factors[name].append(Dense(g_param))
    missing = set(names.values()) - set(factors)
    if missing:
        raise ValueError(
            f"parameters {sorted(missing)} are used outside the modules the factored method understands; "
            "use method='vmap'"
        )
    return factors


def _module_gradients(module: nn.Module, x: Tensor, g: Tensor, names: dict[int, str]) -> dict[str, Tensor]:
    """Per-example gradients of a small module's own parameters, given its input and output gradient."""
    own = {local: p.detach() for local, p in module.named_parameters(recurse=False) if id(p) in names}

    def contraction(weights: dict[str, Tensor], x_one: Tensor, g_one: Tensor) -> Tensor:
        return (functional_call(module, weights, (x_one[None],)) * g_one[None]).sum()

    per_example = vmap(grad(contraction), in_dims=(None, 0, 0))(own, x, g)
    return {names[id(getattr(module, local))]: value for local, value in per_example.items()}


def _u_products(a: Tensor, b: Tensor) -> Tensor:
    """(P, T, S) inner products of the u rows of two examples per pair (ids mean one-hot rows)."""
    if a.dtype == torch.long and b.dtype == torch.long:
        return (a[:, :, None] == b[:, None, :]).to(torch.float32)
    if a.dtype == torch.long:
        return b.gather(2, a[:, None, :].expand(-1, b.shape[1], -1)).transpose(1, 2)
    if b.dtype == torch.long:
        return a.gather(2, b[:, None, :].expand(-1, a.shape[1], -1))
    return torch.einsum("ptm,psm->pts", a, b)


def _materialise(c: Outer | Dense, size: int) -> Tensor:
    if isinstance(c, Dense):
        return c.g
    u = F.one_hot(c.u, size).to(c.v.dtype) if c.u.dtype == torch.long else c.u
    return torch.einsum("ntm,ntk->nmk", u, c.v)


def _pair_dot(a: Outer | Dense, b: Outer | Dense, i: Tensor, j: Tensor, rows: int) -> Tensor:
    """<gradient of example i from contribution a, gradient of example j from contribution b>."""
    if isinstance(a, Outer) and isinstance(b, Outer):
        v = torch.einsum("ptn,psn->pts", a.v[i], b.v[j])
        return (_u_products(a.u[i], b.u[j]) * v).sum((1, 2))
    ga, gb = _materialise(a, rows)[i], _materialise(b, rows)[j]
    return (ga * gb).flatten(1).sum(1)


def _factored_dots(model: nn.Module, batch: ExampleBatch, left: Tensor, right: Tensor) -> dict[str, Tensor]:
    """name -> (P,) inner products <g_left[p], g_right[p]> per parameter, from one backward."""
    params = trainable_parameters(model)
    factors = _capture(model, batch)
    dots = {}
    for name, contributions in factors.items():
        rows = params[name].shape[0]
        dots[name] = _total(_pair_dot(a, b, left, right, rows) for a in contributions for b in contributions)
    return dots


def _vmap_dots(
    model: PreTrainedModel, batch: ExampleBatch, left: Tensor, right: Tensor, chunk_size: int
) -> dict[str, Tensor]:
    grads = per_example_gradients(model, batch, chunk_size)
    return {name: (g[left] * g[right]).flatten(1).sum(1) for name, g in grads.items()}


# ----------------------------------------------------------------------------- public API


def pair_inner_products(
    model: PreTrainedModel,
    batch: ExampleBatch,
    pairs: Sequence[tuple[int, int]],
    method: str = "factored",
    chunk_size: int = 64,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """For index pairs (i, j) into ``batch``: per parameter, <g_i, g_j> of shape (P,) and every
    example's squared gradient norm |g_n|^2 of shape (N,). Work is chunked by ``chunk_size`` pairs."""
    if method not in METHODS:
        raise ValueError(f"gradient method {method!r} is unknown; use one of {METHODS}")
    pairs_t = torch.tensor(list(pairs), dtype=torch.long).reshape(-1, 2)
    dots: dict[str, list[Tensor]] = defaultdict(list)
    squares: dict[str, Tensor] = {}
    with _eval_mode(model):
        for start in range(0, len(pairs_t), chunk_size):
            chunk = pairs_t[start : start + chunk_size]
            examples, local = torch.unique(chunk, return_inverse=True)
            sub = batch.select(examples)
            index = torch.arange(len(examples))
            both = (torch.cat([local[:, 0], index]), torch.cat([local[:, 1], index]))
            if method == "factored":
                values = _factored_dots(model, sub, *both)
            else:
                values = _vmap_dots(model, sub, *both, chunk_size=chunk_size)
            for name, value in values.items():
                value = value.detach().cpu()
                dots[name].append(value[: len(chunk)])
                squares.setdefault(name, torch.full((len(batch),), float("nan")))[examples] = value[len(chunk) :]
    return {name: torch.cat(v) for name, v in dots.items()}, squares


def _by_group(names: Sequence[str], groups: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """(group, its parameter names) for ``all`` and every group that has parameters."""
    for group in ("all", *GROUPS):
        members = [n for n in names if group == "all" or groups[n] == group]
        if members:
            yield group, members


def _total(terms: Iterable[Tensor]) -> Tensor:
    """``sum(terms)`` of some tensors; there is always one (of none, ``sum`` would give the int 0)."""
    total = sum(terms)
    assert isinstance(total, Tensor), "a sum over no parameters or no contributions"
    return total


def _cosine(dot: Tensor, square_a: Tensor, square_b: Tensor) -> Tensor:
    norm = (square_a.clamp(min=0) * square_b.clamp(min=0)).sqrt()
    return torch.where(norm > 0, dot / norm, torch.full_like(dot, float("nan")))


def pair_cosines(
    model: PreTrainedModel,
    batch: ExampleBatch,
    pairs: Sequence[tuple[int, int]],
    method: str = "factored",
    chunk_size: int = 64,
) -> dict[str, Tensor]:
    """Gradient cosine of every pair, for the whole parameter vector (``all``) and per group.

    Returns group -> (P,) tensor; a group whose gradient is zero for an example gives NaN there.
    """
    dots, squares = pair_inner_products(model, batch, pairs, method, chunk_size)
    groups = parameter_groups(model)
    left = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    right = torch.tensor([j for _, j in pairs], dtype=torch.long)
    out = {}
    for group, members in _by_group(list(dots), groups):
        square = _total(squares[n] for n in members)
        out[group] = _cosine(_total(dots[n] for n in members), square[left], square[right])
    return out


def gradient_cosines_by_group(a: dict[str, Tensor], b: dict[str, Tensor], model: PreTrainedModel) -> dict[str, float]:
    """Cosine between two full gradients (name -> tensor), overall (``all``) and per group."""
    groups = parameter_groups(model)
    out = {}
    for group, members in _by_group(list(a), groups):
        dot, sq_a, sq_b = (_total((x[n] * y[n]).sum() for n in members).reshape(1) for x, y in ((a, b), (a, a), (b, b)))
        out[group] = float(_cosine(dot, sq_a, sq_b)[0])
    return out
