"""Causal LMs from scratch (GPT-2, Llama, GPT-NeoX configs plus overrides) or from a decoder-only
checkpoint (by path or hub id, at a revision).

Attention-only models keep a standard architecture, so ``AutoModelForCausalLM.from_pretrained``
loads them anywhere: each block's MLP has width 1 and a zeroed output projection (its output is
exactly zero) and is frozen together with the norm that feeds it.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from iml_hf.config.args import ModelArguments
from iml_hf.models.architectures import mlp_parts


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


def make_attention_only(model: PreTrainedModel) -> None:
    """Zero every MLP's output and freeze the MLP and its input norm (they get no gradient)."""
    with torch.no_grad():
        for mlp, norm, out in mlp_parts(model):
            for parameter in out.parameters():  # its weight and bias, if it has one
                parameter.zero_()
            for module in (mlp, norm):
                module.requires_grad_(False)


def load_checkpoint_config(args: ModelArguments) -> PretrainedConfig:
    """The checkpoint's config; encoder-decoder checkpoints (T5) are refused here, before any
    weights load, because the toolkit scores a causal continuation of one sequence everywhere."""
    assert args.model_name_or_path, "a checkpoint is loaded only when model.model_name_or_path is set"
    config = AutoConfig.from_pretrained(
        args.model_name_or_path, revision=args.revision, trust_remote_code=args.trust_remote_code
    )
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"model.model_name_or_path={args.model_name_or_path!r} is an encoder-decoder model "
            f"({config.model_type}); iml_hf trains decoder-only causal LMs: its corpus rows are one "
            "sequence (prompt + answer) with the loss on the answer or all of it, and exact match, gradient "
            "alignment and the layer analysis all read that one causal sequence. Use a decoder-only "
            "checkpoint (GPT-2, Pythia/GPT-NeoX, Llama, ...)"
        )
    return config


def load_checkpoint(args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A pretrained causal LM by path or hub id at ``args.revision`` (safetensors preferred, the
    library default), in ``args.dtype``, its embeddings grown to the tokenizer if tokens were added."""
    assert args.model_name_or_path, "a checkpoint is loaded only when model.model_name_or_path is set"
    config = load_checkpoint_config(args)
    extra = {"attn_implementation": args.attn_implementation} if args.attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(
        args.model_name_or_path,
        config=config,
        revision=args.revision,
        dtype=args.dtype if args.dtype == "auto" else getattr(torch, args.dtype),
        trust_remote_code=args.trust_remote_code,
        **extra,
    )
    if next(model.parameters()).dtype == torch.float16:
        raise ValueError(
            f"model.dtype={args.dtype!r} loaded {args.model_name_or_path!r} in float16, in which AdamW gives NaN "
            "(its epsilon rounds to zero); use model.dtype=float32 (with training.fp16 or bf16) or bfloat16"
        )
    if len(tokenizer) > cast(nn.Embedding, model.get_input_embeddings()).num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def set_causal_lm_loss(model: PreTrainedModel) -> None:
    """Name the loss every model here computes: transformers 5 infers ``loss_type`` from the class
    name, which finds nothing in ``GPT2LMHeadModel`` (so every step warned ``loss_type=None ...
    unrecognized`` and fell back to the causal-LM loss anyway). Named, the Trainer also counts the
    tokens a batch's loss averages over as the shifted causal loss does (``labels[..., 1:]``)."""
    from transformers.loss.loss_utils import LOSS_MAPPING

    if getattr(model, "loss_type", None) not in LOSS_MAPPING:
        model.loss_type = "ForCausalLM"


def build_model(args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A new model from ``args`` or the checkpoint at ``args.model_name_or_path``; its generation
    config decodes greedily with the tokenizer's special tokens, as the toolkit's EM does."""
    if args.model_name_or_path:
        model = load_checkpoint(args, tokenizer)
    else:
        extra = {"attn_implementation": args.attn_implementation} if args.attn_implementation else {}
        dtype = torch.float32 if args.dtype == "auto" else getattr(torch, args.dtype)
        model = AutoModelForCausalLM.from_config(build_config(args, tokenizer), dtype=dtype, **extra)
    if getattr(model.config, "attention_only", False):
        make_attention_only(model)
    set_causal_lm_loss(model)
    generation = model.generation_config
    generation.do_sample, generation.num_beams = False, 1
    generation.pad_token_id, generation.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    generation.bos_token_id = tokenizer.bos_token_id
    return model


def count_parameters(model: torch.nn.Module) -> dict[str, Any]:
    """Total and trainable parameter counts (tied weights counted once)."""
    unique = {id(p): p for p in model.parameters()}.values()
    return {
        "total": sum(p.numel() for p in unique),
        "trainable": sum(p.numel() for p in unique if p.requires_grad),
    }
