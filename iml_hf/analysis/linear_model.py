"""The linear model of Wu & Varshney's Section 4 (eqs. 10-12) and the Proposition-1 condition.

For layer l and the current token z_n with context z_1 .. z_n (the layer's input, the residual
stream, layer normalization omitted as eq. 12 says):

* eq. 10, linear attention: ``W_MHSA = sum_h sum_{i<=n} W_O^h W_V^h z_i z_i^T (W_K^h)^T W_Q^h``.
  Following the conventions of eq. 3, the ``1/sqrt(d_head)`` factor and every bias are dropped
  (eq. 10 writes ``W_V`` without its head index; eq. 3 defines ``v_i^h = W_V^h z_i``, so it is
  ``W_V^h``). Computed as ``W_O blockdiag_h(S_h) W_Q`` with ``S_h = sum_{i<=n} v_i^h (k_i^h)^T``,
  the linear-attention state, which is exactly the sum above regrouped.
* eq. 11: ``W_FFN = W_2 W_1`` (activation and biases dropped).
* eq. 12: ``W_linear = (I + W_FFN)(I + W_MHSA)``.

Proposition 1 (Table 2): with ``W^T W = U Lambda U^-1``, ``a = U^T x`` and ``b = U^-1 x``, the
condition ``sum_i lambda_i a_i b_i >= sum_i a_i b_i`` gives ``|Wx| >= |x|``. The proof rewrites
``x^T U Lambda U^-1 x`` as ``a^T Lambda b``, which holds for any diagonalizing ``U`` only with
``b = U^-1 x``; that is the reading implemented (``torch.linalg.solve``). For the orthonormal
``U`` of a symmetric eigensolver ``U^-1 = U^T``, so the other reading (``b = U^T x``) coincides.
With ``b = U^-1 x`` the condition is *equivalent* to ``|Wx| >= |x|`` (both sides are
``x^T W^T W x`` and ``x^T x``), which the analysis checks on every matrix.

Only GPT-2 blocks are built (Conv1D weights, fused QKV), as in the paper, which skips LLaMa for
its gated FFN; other architectures get a clear ``skipped`` reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

#: Relative slack of the ">=" comparisons, so that an exact equality (W = I) is not lost to rounding.
RELATIVE_TOLERANCE = 1e-9


@dataclass
class LinearBlockWeights:
    """The matrices of eqs. 10-11 for one block, acting on column vectors (out x in)."""

    query: Tensor  # (H, d_head, d): W_Q^h
    key: Tensor  # (H, d_head, d): W_K^h
    value: Tensor  # (H, d_head, d): W_V^h
    output: Tensor  # (d, H * d_head): [W_O^1 ... W_O^H]
    ffn: Tensor  # (d, d): W_2 W_1

    @property
    def dim(self) -> int:
        return self.output.shape[0]

    @cached_property
    def residual_ffn(self) -> Tensor:
        """I + W_FFN, the same for every token of the layer."""
        return torch.eye(self.dim, dtype=self.ffn.dtype, device=self.ffn.device) + self.ffn

    @cached_property
    def residual_ffn_output(self) -> Tensor:
        """(I + W_FFN) W_O, so that W_linear costs one (d, d) product per token."""
        return self.residual_ffn @ self.output


def unsupported_reason(block: nn.Module) -> str | None:
    """Why the paper's linear model is not built for this block (None for a GPT-2 block)."""
    name = type(block).__name__
    if name == "GPT2Block":
        return None
    if hasattr(getattr(block, "mlp", None), "gate_proj"):
        return (
            f"{name} has a gated FFN (down(act(gate x) * up x)), which has no linear version W_2 W_1; "
            "the paper builds the linear model for GPT-2 only for this reason (Section 5.3)"
        )
    if name == "GPTNeoXLayer":
        return (
            "GPTNeoXLayer uses rotary position embeddings inside attention (eq. 10 has none) and, in "
            "Pythia, a parallel residual (eq. 12 composes the sublayers); the paper builds the linear "
            "model for GPT-2 only"
        )
    return f"the paper's linear model is built for GPT-2 blocks only, not {name}"


def gpt2_block_weights(block: GPT2Block, dtype: torch.dtype = torch.float64) -> LinearBlockWeights:
    """Eq. 10-11 matrices of a ``GPT2Block``. Conv1D stores ``y = x @ weight + bias`` (in x out),
    so a matrix acting on columns is ``weight.T``; ``c_attn`` stacks Q, K, V, each split into
    heads of ``d / H`` consecutive rows."""
    attn, mlp = block.attn, block.mlp
    d, heads = attn.embed_dim, attn.num_heads
    qkv = attn.c_attn.weight.detach().to(dtype).T  # (3d, d)
    query, key, value = (part.reshape(heads, d // heads, d) for part in qkv.split(d, dim=0))
    output = attn.c_proj.weight.detach().to(dtype).T  # (d, d), columns grouped by head
    w1 = mlp.c_fc.weight.detach().to(dtype).T  # (d_ff, d)
    w2 = mlp.c_proj.weight.detach().to(dtype).T  # (d, d_ff)
    return LinearBlockWeights(query, key, value, output, w2 @ w1)


def _attention_reads(weights: LinearBlockWeights, z: Tensor, positions: Tensor) -> Tensor:
    """``blockdiag_h(S_h) W_Q`` (p, d, d) with ``S_h = sum_{i<=n} v_i^h (k_i^h)^T`` for each current
    position n: W_MHSA is ``W_O`` times it."""
    z = z.to(weights.output.dtype)
    keys = torch.einsum("hkd,td->thk", weights.key, z)
    values = torch.einsum("hkd,td->thk", weights.value, z)
    context = (torch.arange(z.shape[0], device=z.device)[None, :] <= positions[:, None]).to(z.dtype)  # i <= n
    state = torch.einsum("pt,thi,thj->phij", context, values, keys)  # sum_i v_i^h (k_i^h)^T
    heads, d_head, d = weights.query.shape
    return torch.einsum("phij,hjd->phid", state, weights.query).reshape(len(positions), heads * d_head, d)


def mhsa_matrices(weights: LinearBlockWeights, z: Tensor, positions: Tensor) -> Tensor:
    """W_MHSA (eq. 10) for each current position n in ``positions`` (p,), over the context
    z_1 .. z_n of ``z`` (T, d): (p, d, d)."""
    return weights.output @ _attention_reads(weights, z, positions)


def linear_layer_matrices(weights: LinearBlockWeights, z: Tensor, positions: Tensor) -> Tensor:
    """W_linear = (I + W_FFN)(I + W_MHSA) (eq. 12) for each current position: (p, d, d),
    computed as ``(I + W_FFN) + ((I + W_FFN) W_O) blockdiag(S) W_Q``, one (d, d) product per token."""
    return weights.residual_ffn + weights.residual_ffn_output @ _attention_reads(weights, z, positions)


@dataclass
class PropositionOne:
    """Proposition 1 for a batch of matrices W (p, d, d) and inputs x (p, d)."""

    weighted: Tensor  # sum_i lambda_i a_i b_i  (= |Wx|^2)
    plain: Tensor  # sum_i a_i b_i  (= |x|^2)
    eigenvalues: Tensor  # (p, d) of the Gram matrix, ascending
    output_norm: Tensor  # |Wx|, computed directly
    input_norm: Tensor  # |x|

    @property
    def condition(self) -> Tensor:
        """The condition of Proposition 1, per matrix."""
        return self.weighted >= self.plain * (1 - RELATIVE_TOLERANCE)

    @property
    def norm_not_decreased(self) -> Tensor:
        """|Wx| >= |x|, computed without the eigendecomposition."""
        return self.output_norm.square() >= self.input_norm.square() * (1 - RELATIVE_TOLERANCE)

    @property
    def stretches_every_direction(self) -> Tensor:
        """Every Gram eigenvalue >= 1: W shrinks no vector at all (ours, a stronger property)."""
        return self.eigenvalues[:, 0] >= 1 - RELATIVE_TOLERANCE


def condition_terms(eigenvalues: Tensor, vectors: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(sum lambda_i a_i b_i, sum a_i b_i)`` with ``a = U^T x`` and ``b = U^-1 x`` for any
    diagonalization ``U Lambda U^-1`` of the Gram matrix (batched)."""
    a = (vectors.transpose(-1, -2) @ x[..., None])[..., 0]
    # one LU per matrix: torch 2.13's CPU (MKL) batched LU of 768 x 768 float64 matrices fails in
    # DLASWP and hangs with two threads; a loop costs the same, as the factorizations are per matrix.
    b = torch.stack(
        [torch.linalg.solve(u, v) for u, v in zip(vectors.reshape(-1, *vectors.shape[-2:]), x.reshape(-1, x.shape[-1]))]
    ).reshape(x.shape)
    return (eigenvalues * a * b).sum(-1), (a * b).sum(-1)


def proposition_one(w: Tensor, x: Tensor) -> PropositionOne:
    """Eigendecomposition of ``W^T W`` (symmetric, so ``eigh``) and the two sides of the condition."""
    w, x = w.double(), x.double()
    eigenvalues, vectors = torch.linalg.eigh(w.transpose(-1, -2) @ w)
    weighted, plain = condition_terms(eigenvalues, vectors, x)
    return PropositionOne(weighted, plain, eigenvalues, (w @ x[..., None])[..., 0].norm(dim=-1), x.norm(dim=-1))


def _share(flags: list[Tensor]) -> float | None:
    joined = torch.cat(flags) if flags else torch.zeros(0, dtype=torch.bool)
    return float(joined.double().mean()) if len(joined) else None


class LinearModelTable:
    """Table 2, accumulated one sequence at a time: per layer, the share of (token, layer)
    matrices W_linear meeting Proposition 1 for their own current token, with ``|Wx| >= |x|``
    computed directly next to it. The headline covers layers 1 .. L-1 (Conjecture 4.1 leaves the
    last layer out); every layer is also reported on its own."""

    KEYS = ("condition", "norm", "every", "ratio", "min_eigenvalue")

    def __init__(self, blocks: nn.ModuleList, chunk: int = 16):
        self.skipped = unsupported_reason(blocks[0])
        gpt2_blocks = cast("Iterable[GPT2Block]", blocks)  # read only when unsupported_reason found GPT-2 blocks
        self.weights = [] if self.skipped else [gpt2_block_weights(block) for block in gpt2_blocks]
        self.chunk = chunk
        self.counts: list[dict[str, list[Tensor]]] = [{k: [] for k in self.KEYS} for _ in self.weights]
        self.tokens = 0

    def add(self, states: list[Tensor], positions: list[int]) -> None:
        """One sequence: the inputs of every block (each (T, d)) and the current positions to test."""
        self.tokens += len(positions)
        for layer, z, counts in zip(self.weights, states, self.counts):
            z = z.to(layer.output.device)
            for start in range(0, len(positions), self.chunk):
                picked = torch.tensor(positions[start : start + self.chunk], device=z.device)
                result = proposition_one(linear_layer_matrices(layer, z, picked), z[picked])
                counts["condition"].append(result.condition.cpu())
                counts["norm"].append(result.norm_not_decreased.cpu())
                counts["every"].append(result.stretches_every_direction.cpu())
                counts["ratio"].append((result.output_norm / result.input_norm).cpu())
                counts["min_eigenvalue"].append(result.eigenvalues[:, 0].cpu())

    def result(self) -> dict:
        """The table as written to layers.json."""
        if self.skipped:
            return {"skipped": self.skipped}
        layers = []
        for counts in self.counts:
            ratio = torch.cat(counts["ratio"]) if counts["ratio"] else torch.zeros(0)
            smallest = torch.cat(counts["min_eigenvalue"]) if counts["min_eigenvalue"] else torch.zeros(0)
            layers.append(
                {
                    "proposition_1": _share(counts["condition"]),
                    "norm_not_decreased": _share(counts["norm"]),
                    "agreement": _share([c == n for c, n in zip(counts["condition"], counts["norm"])]),
                    "stretches_every_direction": _share(counts["every"]),
                    "median_norm_ratio": float(ratio.median()) if len(ratio) else None,
                    "median_min_eigenvalue": float(smallest.median()) if len(smallest) else None,
                }
            )
        headline = [flags for counts in self.counts[:-1] for flags in counts["condition"]]
        return {
            "tokens": self.tokens,
            "table2": {
                "layers": f"1 .. {len(self.counts) - 1}" if len(self.counts) > 1 else "none (one layer)",
                "proposition_1": _share(headline),
                "matrices": int(sum(len(flags) for flags in headline)),
            },
            "layers": layers,
        }
