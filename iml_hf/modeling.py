"""Causal LMs from scratch (GPT-2, Llama, GPT-NeoX configs plus overrides) or from a checkpoint.

Attention-only models keep a standard architecture, so ``AutoModelForCausalLM.from_pretrained``
loads them anywhere: each block's MLP has width 1 and a zeroed output projection (its output is
exactly zero) and is frozen together with the norm that feeds it.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from iml_hf.args import ModelArguments


def build_config(args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The from-scratch config for ``args.architecture`` with the tokenizer's vocabulary and ids."""
    width = 1 if args.attention_only else (args.intermediate_size or 4 * args.hidden_size)
    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": args.tie_word_embeddings,
    }
    if args.architecture == "gpt2":
        config: PretrainedConfig = GPT2Config(
            n_layer=args.num_layers,
            n_embd=args.hidden_size,
            n_head=args.num_heads,
            n_inner=width,
            n_positions=args.max_position_embeddings,
            resid_pdrop=args.dropout,
            embd_pdrop=args.dropout,
            attn_pdrop=args.dropout,
            **ids,
        )
    else:
        common = {
            "num_hidden_layers": args.num_layers,
            "hidden_size": args.hidden_size,
            "num_attention_heads": args.num_heads,
            "intermediate_size": width,
            "max_position_embeddings": args.max_position_embeddings,
            "attention_dropout": args.dropout,
            **ids,
        }
        if args.architecture == "llama":
            config = LlamaConfig(num_key_value_heads=args.num_heads, **common)
        else:
            config = GPTNeoXConfig(hidden_dropout=args.dropout, **common)
    for key, value in args.config_overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"model.config_overrides: {type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    config.attention_only = args.attention_only
    return config


def _mlp_parts(model: PreTrainedModel) -> list[tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]]:
    """(mlp, norm feeding it, output projection) of every block."""
    parts = []
    for block in model.base_model.h if hasattr(model.base_model, "h") else model.base_model.layers:
        mlp = block.mlp
        norm = getattr(block, "ln_2", None) or block.post_attention_layernorm
        out = getattr(mlp, "c_proj", None) or getattr(mlp, "down_proj", None) or mlp.dense_4h_to_h
        parts.append((mlp, norm, out))
    return parts


def make_attention_only(model: PreTrainedModel) -> None:
    """Zero every MLP's output and freeze the MLP and its input norm (they get no gradient)."""
    with torch.no_grad():
        for mlp, norm, out in _mlp_parts(model):
            out.weight.zero_()
            if getattr(out, "bias", None) is not None:
                out.bias.zero_()
            for module in (mlp, norm):
                module.requires_grad_(False)


def build_model(args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A new model from ``args`` or the checkpoint at ``args.model_name_or_path``."""
    if args.model_name_or_path:
        model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    else:
        model = AutoModelForCausalLM.from_config(build_config(args, tokenizer))
    if getattr(model.config, "attention_only", False):
        make_attention_only(model)
    return model


def count_parameters(model: torch.nn.Module) -> dict[str, Any]:
    """Total and trainable parameter counts (tied weights counted once)."""
    unique = {id(p): p for p in model.parameters()}.values()
    return {
        "total": sum(p.numel() for p in unique),
        "trainable": sum(p.numel() for p in unique if p.requires_grad),
    }
