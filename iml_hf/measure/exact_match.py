"""Exact match of greedy answers, batched.

An example is correct when the model's greedy continuation of its prompt starts with exactly the
answer's tokens. Single-token answers need one forward pass (the argmax at the last prompt
position); longer answers use ``greedy_continuations`` (batched greedy ``generate`` with left
padding), which ``iml_hf.measure.qa_match.generate_answers`` shares. ``greedy_answers`` also returns the
greedy tokens each example was judged by (the predictions of samples.jsonl).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import GenerationConfig, PreTrainedModel


def parameters_sharded(model: torch.nn.Module) -> bool:
    """Whether the model's parameters are sharded across processes (FSDP, DeepSpeed ZeRO-3), so that
    every forward is a collective: all processes must then make the same calls in the same order."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor
    from transformers.integrations import is_deepspeed_zero3_enabled

    return (
        isinstance(model, FullyShardedDataParallel)
        or is_deepspeed_zero3_enabled()
        or any(isinstance(p, DTensor) for p in model.parameters())
    )


def _batches(indices: Sequence[int], size: int) -> list[Sequence[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


@torch.no_grad()
def _first_tokens(model: PreTrainedModel, prompts: list[list[int]], pad_id: int) -> list[int]:
    """The greedy next token after each prompt: one forward pass over the right-padded batch."""
    lengths = torch.tensor([len(p) for p in prompts])
    input_ids = torch.full((len(prompts), int(lengths.max())), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, : len(p)] = torch.tensor(p)
    mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()
    device = model.device
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
    return logits[torch.arange(len(prompts), device=device), lengths.to(device) - 1].argmax(-1).cpu().tolist()


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts right-aligned in one tensor (left padding) and their attention mask."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return input_ids, mask


def _cut_after(tokens: list[int], eos_id: int | None) -> list[int]:
    """``tokens`` up to and including the first ``eos_id`` (generate pads finished rows after it)."""
    if eos_id is not None and eos_id in tokens:
        return tokens[: tokens.index(eos_id) + 1]
    return tokens


@torch.no_grad()
def greedy_continuations(
    model: PreTrainedModel,
    prompts: list[list[int]],
    max_new_tokens: int,
    pad_id: int,
    eos_id: int | None = None,
    batch_size: int = 1024,
) -> list[list[int]]:
    """New tokens of each prompt's greedy continuation, up to and including the first ``eos_id``
    (else ``max_new_tokens`` of them), by batched ``generate`` with left padding.

    Prompts are batched longest first so a batch holds similar lengths (less padding); the
    result is in the input order. The model runs in eval mode, restored afterwards. With sharded
    parameters the processes decode in step until the last one is done (``synced_gpus``).
    """
    config = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id
    )
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    synced = True if parameters_sharded(model) else None  # None: generate's own check
    out: list[list[int]] = [[] for _ in prompts]
    with _eval_mode(model):
        for batch in _batches(order, batch_size):
            input_ids, mask = _left_padded([prompts[i] for i in batch], pad_id)
            generated = model.generate(  # type: ignore[operator]  # GenerationMixin's, not PreTrainedModel's
                input_ids=input_ids.to(model.device),
                attention_mask=mask.to(model.device),
                generation_config=config,
                synced_gpus=synced,
            )
            for i, tokens in zip(batch, generated[:, input_ids.shape[1] :].cpu().tolist()):
                out[i] = _cut_after(tokens, eos_id)
    return out


def exact_match(
    model: PreTrainedModel,
    prompt_ids: list[list[int]],
    answer_ids: list[list[int]],
    pad_token_id: int,
    eos_token_id: int | None = None,
    batch_size: int = 1024,
) -> list[bool]:
    """Per-example exact match of greedy decoding; the model is put in eval mode and restored.
    Single-token answers take one forward pass, except with sharded parameters, where every example
    is decoded (each process then makes the same calls whatever its mix of answer lengths)."""
    return greedy_answers(model, prompt_ids, answer_ids, pad_token_id, eos_token_id, batch_size)[0]


def greedy_answers(
    model: PreTrainedModel,
    prompt_ids: list[list[int]],
    answer_ids: list[list[int]],
    pad_token_id: int,
    eos_token_id: int | None = None,
    batch_size: int = 1024,
) -> tuple[list[bool], list[list[int]]]:
    """``exact_match`` and the greedy tokens it compared for each example (as many as its answer
    has), so a caller can show the predictions (samples.jsonl) without decoding a second time."""
    if len(prompt_ids) != len(answer_ids):
        raise ValueError("prompt_ids and answer_ids must have the same length")
    with _eval_mode(model):
        predicted: list[list[int]] = [[] for _ in prompt_ids]
        sharded = parameters_sharded(model)
        single = [] if sharded else [i for i, a in enumerate(answer_ids) if len(a) == 1]
        multi = [i for i, a in enumerate(answer_ids) if sharded or len(a) > 1]
        for batch in _batches(single, batch_size):
            for i, token in zip(batch, _first_tokens(model, [prompt_ids[i] for i in batch], pad_token_id)):
                predicted[i] = [token]
        for batch in _batches(multi, batch_size):
            answers = [answer_ids[i] for i in batch]
            generated = greedy_continuations(
                model,
                [prompt_ids[i] for i in batch],
                max_new_tokens=max(len(a) for a in answers),
                pad_id=pad_token_id,
                eos_id=eos_token_id,
                batch_size=len(batch),
            )
            for i, g, a in zip(batch, generated, answers):
                predicted[i] = g[: len(a)]
        return [p == list(a) for p, a in zip(predicted, answer_ids)], predicted
