"""The one place that knows where each decoder architecture keeps its layers, norms, attention and MLP.

Attention-only models, the layer analysis and the gradient parameter groups all ask this module
instead of guessing from attribute names; a new architecture is one ``register_architecture`` call.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard

from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class Architecture:
    """Attribute names of one decoder family: on the base model (``layers``, ``final_norm``) and on
    each block (the rest). ``gated_mlp``: the MLP multiplies two projections (SwiGLU)."""

    model_type: str
    layers: str
    final_norm: str
    attention: str
    attention_norm: str
    mlp: str
    mlp_norm: str
    mlp_out: str
    gated_mlp: bool = False


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(spec: Architecture, *aliases: str) -> Architecture:
    """Make ``spec`` known under its ``model_type`` (``config.model_type``) and any aliases."""
    for name in (spec.model_type, *aliases):
        ARCHITECTURES[name] = spec
    return spec


register_architecture(Architecture("gpt2", "h", "ln_f", "attn", "ln_1", "mlp", "ln_2", "c_proj"))
register_architecture(
    Architecture(
        "gpt_neox",
        "layers",
        "final_layer_norm",
        "attention",
        "input_layernorm",
        "mlp",
        "post_attention_layernorm",
        "dense_4h_to_h",
    )
)
register_architecture(
    Architecture(
        "llama",
        "layers",
        "norm",
        "self_attn",
        "input_layernorm",
        "mlp",
        "post_attention_layernorm",
        "down_proj",
        gated_mlp=True,
    ),
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "olmo",
    "phi3",
)


def is_registered(model: nn.Module) -> TypeGuard[PreTrainedModel]:
    """Whether this module knows the model's architecture (then it is a transformers model)."""
    return getattr(getattr(model, "config", None), "model_type", None) in ARCHITECTURES


def architecture_of(model: nn.Module) -> Architecture:
    """The registered architecture of a transformers model (by ``config.model_type``); an
    unregistered one is an error that names the registered ones and how to add it."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        close = difflib.get_close_matches(str(model_type), list(ARCHITECTURES), n=1)
        hint = f" (closest: {close[0]!r})" if close else ""
        raise ValueError(
            f"model_type {model_type!r} is not a registered decoder architecture{hint}; registered: "
            f"{sorted(ARCHITECTURES)}. Add it with iml_hf.models.architectures.register_architecture(Architecture(...))"
        )
    return ARCHITECTURES[model_type]


def blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The transformer blocks, first to last."""
    return getattr(model.base_model, architecture_of(model).layers)


def final_norm(model: PreTrainedModel) -> nn.Module:
    """The norm between the last block and the LM head."""
    return getattr(model.base_model, architecture_of(model).final_norm)


def mlp_parts(model: PreTrainedModel) -> list[tuple[nn.Module, nn.Module, nn.Module]]:
    """(MLP, the norm feeding it, its output projection) of every block."""
    spec = architecture_of(model)
    parts = []
    for block in blocks(model):
        mlp = getattr(block, spec.mlp)
        parts.append((mlp, getattr(block, spec.mlp_norm), getattr(mlp, spec.mlp_out)))
    return parts


def module_roles(model: PreTrainedModel) -> dict[str, str]:
    """Qualified module name -> role (``attention``, ``mlp``, ``norms``) for every block's
    attention, MLP and norms and the final norm; modules inside them share the role."""
    spec = architecture_of(model)
    prefix = model.base_model_prefix
    base = f"{prefix}." if getattr(model, prefix, None) is model.base_model else ""
    roles = {f"{base}{spec.final_norm}": "norms"}
    for index in range(len(blocks(model))):
        block = f"{base}{spec.layers}.{index}"
        roles[f"{block}.{spec.attention}"] = "attention"
        roles[f"{block}.{spec.mlp}"] = "mlp"
        roles[f"{block}.{spec.attention_norm}"] = "norms"
        roles[f"{block}.{spec.mlp_norm}"] = "norms"
    return roles


def role_of(module_name: str, roles: dict[str, str]) -> str | None:
    """The role of ``module_name`` or of the nearest enclosing module that has one."""
    parts = module_name.split(".")
    for end in range(len(parts), 0, -1):
        role = roles.get(".".join(parts[:end]))
        if role is not None:
            return role
    return None
