"""Exact match of greedy answers, batched.

An example is correct when the model's greedy continuation of its prompt starts with exactly the
answer's tokens. Single-token answers need one forward pass (the argmax at the last prompt
position); longer answers use batched greedy ``generate`` with left padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel


def _batches(indices: Sequence[int], size: int) -> list[Sequence[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


@torch.no_grad()
def _first_token_correct(
    model: PreTrainedModel, prompts: list[list[int]], answers: list[list[int]], pad_id: int
) -> list[bool]:
    lengths = torch.tensor([len(p) for p in prompts])
    input_ids = torch.full((len(prompts), int(lengths.max())), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, : len(p)] = torch.tensor(p)
    mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()
    device = model.device
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
    predicted = logits[torch.arange(len(prompts), device=device), lengths.to(device) - 1].argmax(-1)
    return (predicted.cpu() == torch.tensor([a[0] for a in answers])).tolist()


@torch.no_grad()
def _greedy_correct(
    model: PreTrainedModel,
    prompts: list[list[int]],
    answers: list[list[int]],
    pad_id: int,
    eos_id: int | None,
) -> list[bool]:
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max(len(a) for a in answers),
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )
    out = model.generate(
        input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device), generation_config=config
    )
    generated = out[:, width:].cpu().tolist()
    return [g[: len(a)] == a for g, a in zip(generated, answers)]


def exact_match(
    model: PreTrainedModel,
    prompt_ids: list[list[int]],
    answer_ids: list[list[int]],
    pad_token_id: int,
    eos_token_id: int | None = None,
    batch_size: int = 1024,
) -> list[bool]:
    """Per-example exact match of greedy decoding; the model is put in eval mode and restored."""
    if len(prompt_ids) != len(answer_ids):
        raise ValueError("prompt_ids and answer_ids must have the same length")
    was_training = model.training
    model.eval()
    try:
        correct = [False] * len(prompt_ids)
        single = [i for i, a in enumerate(answer_ids) if len(a) == 1]
        multi = [i for i, a in enumerate(answer_ids) if len(a) > 1]
        for batch in _batches(single, batch_size):
            scores = _first_token_correct(
                model, [prompt_ids[i] for i in batch], [answer_ids[i] for i in batch], pad_token_id
            )
            for i, ok in zip(batch, scores):
                correct[i] = ok
        for batch in _batches(multi, batch_size):
            scores = _greedy_correct(
                model,
                [prompt_ids[i] for i in batch],
                [answer_ids[i] for i in batch],
                pad_token_id,
                eos_token_id,
            )
            for i, ok in zip(batch, scores):
                correct[i] = ok
        return correct
    finally:
        model.train(was_training)
