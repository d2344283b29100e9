"""Gradient alignment on the toy model: batch-size-1 loop vs torch.func vmap vs the factored method.

All three compute the same cosines (whole parameter vector and per group) for the same
definition-question pairs of the toy recipe's corpus, side by side in one process, alternating
rounds so that machine noise hits all of them; the printed speed-ups are ratios of median times.

    python benchmarks/grad_alignment.py [--recipe recipes/toy.yaml] [--aliases 16] [--questions 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import set_seed

from iml_hf.config import parse_recipe
from iml_hf.data.prepare import prepare_data
from iml_hf.measure.callbacks.grad_alignment import AlignmentSample, alignment_samples
from iml_hf.measure.gradients import ExampleBatch, pair_cosines, parameter_groups, trainable_parameters
from iml_hf.models.modeling import build_model


def loop_cosines(model: torch.nn.Module, batch: ExampleBatch, pairs: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """The reference way: one ``loss.backward()`` per example at batch size 1 (eval mode, each
    gradient once), flattened per group, then cosines of the pairs."""
    params = trainable_parameters(model)
    groups = parameter_groups(model)
    model.eval()
    grads: dict[str, list[torch.Tensor]] = {name: [] for name in params}
    for ids, labels in zip(batch.input_ids, batch.labels):
        keep = int(labels.ne(-100).nonzero().max()) + 1  # drop the padding: batch size 1 needs none
        model.zero_grad(set_to_none=True)
        model(input_ids=ids[None, :keep], labels=labels[None, :keep]).loss.backward()
        for name, p in params.items():
            grads[name].append(p.grad.flatten())
    left = torch.tensor([i for i, _ in pairs])
    right = torch.tensor([j for _, j in pairs])
    dots, squares = {}, {}
    for name, rows in grads.items():
        stacked = torch.stack(rows)
        dots[name] = (stacked[left] * stacked[right]).sum(1)
        squares[name] = (stacked**2).sum(1)
    out = {}
    for group in ("all", *sorted(set(groups.values()))):
        members = [n for n in params if group == "all" or groups[n] == group]
        dot = sum(dots[n] for n in members)
        square = sum(squares[n] for n in members)
        out[group] = dot / (square[left] * square[right]).sqrt()
    return out


def merged(samples: dict[str, AlignmentSample]) -> tuple[ExampleBatch, list[tuple[int, int]]]:
    """All subsets' examples in one batch (re-padded) and their pairs re-indexed."""
    rows, pairs = [], []
    for sample in samples.values():
        offset = len(rows)
        for ids, labels in zip(sample.batch.input_ids.tolist(), sample.batch.labels.tolist()):
            rows.append({"input_ids": ids, "labels": labels})
        pairs.extend((offset + i, offset + j) for i, j in sample.pairs)
    return ExampleBatch.from_rows(rows, pad_token_id=0), pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/toy.yaml")
    parser.add_argument("--aliases", type=int, default=16, help="aliases per subset")
    parser.add_argument("--questions", type=int, default=4, help="questions per alias")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    recipe = parse_recipe([args.recipe])
    _, tokenizer, tokenized = prepare_data(recipe)
    set_seed(0)
    model = build_model(recipe.model, tokenizer)
    samples = alignment_samples(tokenized, tokenizer.pad_token_id, None, args.aliases, args.questions, seed=0)
    batch, pairs = merged(samples)
    print(
        f"model: {recipe.model.architecture}, {sum(p.numel() for p in trainable_parameters(model).values()):,} "
        f"trainable parameters; {len(pairs)} pairs over {len(batch)} distinct examples; {args.threads} thread(s)"
    )

    methods = {
        "loop (batch size 1)": lambda: loop_cosines(model, batch, pairs),
        "vmap (torch.func)": lambda: pair_cosines(model, batch, pairs, "vmap", args.chunk_size),
        "factored": lambda: pair_cosines(model, batch, pairs, "factored", args.chunk_size),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    results = {}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)

    reference = results["loop (batch size 1)"]
    base = statistics.median(times["loop (batch size 1)"])
    for name, values in times.items():
        t = statistics.median(values)
        diff = max((results[name][g] - reference[g]).abs().nan_to_num().max().item() for g in reference)
        print(f"{name:22s} median {t:7.3f} s  speed-up vs loop {base / t:6.1f}x  max |cosine - loop| {diff:.1e}")


if __name__ == "__main__":
    main()
