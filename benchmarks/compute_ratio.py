"""Training compute of one recipe against another (e.g. a CPU scale-down against the authors' GPU
configuration): per stage the training rows, steps, tokens and FLOPs, from the recipes themselves.

    python benchmarks/compute_ratio.py recipes/set_inclusion_cpu.yaml recipes/set_inclusion_gpu.yaml

Tokens are the tokens a stage trains on (rows x their own lengths, padding excluded; the authors
padded every row to block_size 16, which this does not count), FLOPs the usual 6 x non-embedding
parameters x tokens (Kaplan et al. 2020). Steps follow the Trainer: ``max_steps`` if set, else
``ceil(rows / batch) x epochs``. A branched recipe runs its branch stage once per branch; the
table counts each stage once. Nothing is trained; the corpora are built as a run builds them.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import torch

from iml_hf.config import parse_recipe
from iml_hf.data.collators import stage_train_set
from iml_hf.data.tokenization import build_wordlevel_tokenizer, tokenize_corpus
from iml_hf.models.modeling import build_model


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """Parameters outside the token and position embeddings and the output head (tied or not)."""
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    skip |= {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if id(p) not in skip)


def recipe_compute(path: str, overrides: list[str]) -> dict[str, Any]:
    """Per-stage rows, steps, tokens and FLOPs of one recipe (bf16 switched off: parsing only)."""
    recipe = parse_recipe([path, "--training.bf16=false", *overrides])
    corpus = recipe.task.build(recipe.run.seed)
    tokenizer = build_wordlevel_tokenizer(corpus)
    train = tokenize_corpus(corpus, tokenizer, recipe.model.loss_on)["train"]
    params = non_embedding_parameters(build_model(recipe.model, tokenizer))
    stages = []
    for stage in recipe.stages:
        rows = stage_train_set(train, stage, recipe.run.seed)
        arguments = recipe.training_arguments(stage)
        batch = arguments.per_device_train_batch_size * arguments.gradient_accumulation_steps
        if arguments.max_steps > 0:
            steps, epochs = arguments.max_steps, arguments.max_steps * batch / len(rows)
        else:  # the Trainer's last batch of an epoch is a short one
            steps, epochs = (
                math.ceil(len(rows) / batch) * math.ceil(arguments.num_train_epochs),
                arguments.num_train_epochs,
            )
        tokens = epochs * sum(map(len, rows["input_ids"]))
        stages.append(
            {
                "stage": stage.name,
                "rows": len(rows),
                "batch": batch,
                "steps": steps,
                "epochs": epochs,
                "tokens": tokens,
                "flops": 6 * params * tokens,
            }
        )
    return {
        "path": path,
        "params": params,
        "stages": stages,
        "tokens": sum(s["tokens"] for s in stages),
        "flops": sum(s["flops"] for s in stages),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("baseline")
    parser.add_argument("--overrides", nargs="*", default=[], help="overrides of the first recipe (--key=value)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [recipe_compute(args.recipe, args.overrides), recipe_compute(args.baseline, [])]
    print("| recipe | non-embedding params | stage | rows | batch | steps | epochs | tokens | FLOPs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for result in results:
        for stage in result["stages"]:
            print(
                f"| {result['path']} | {result['params']:,} | {stage['stage']} | {stage['rows']:,} | {stage['batch']} | "
                f"{stage['steps']:,} | {stage['epochs']:.1f} | {stage['tokens']:.3g} | {stage['flops']:.3g} |"
            )
    ours, theirs = results
    print(
        f"\ntokens: {ours['tokens']:.3g} vs {theirs['tokens']:.3g} (1/{theirs['tokens'] / ours['tokens']:.0f}); "
        f"steps: {sum(s['steps'] for s in ours['stages']):,} vs {sum(s['steps'] for s in theirs['stages']):,}; "
        f"FLOPs: {ours['flops']:.3g} vs {theirs['flops']:.3g} (1/{theirs['flops'] / ours['flops']:.0f})"
    )


if __name__ == "__main__":
    sys.exit(main())
