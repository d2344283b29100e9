"""Training steps per second of the toolkit (IMLTrainer on the toy recipe's model and data) against
a bare PyTorch loop on the same model, batch, optimizer settings and thread count, in one process.

    python benchmarks/throughput.py [--recipe recipes/toy.yaml] [--steps 300] [--rounds 3]

Rounds alternate toolkit and bare loop so that machine noise hits both; the ratio of the best
round of each is printed (target: toolkit / bare >= 0.85).
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import get_scheduler

from iml_hf.config import parse_recipe
from iml_hf.data.collators import PadCollator, stage_train_set
from iml_hf.data.prepare import prepare_data
from iml_hf.models.modeling import build_model
from iml_hf.training.trainer import IMLTrainer


def toolkit_steps_per_second(recipe, stage, model, train_set, tokenizer, steps: int) -> float:
    args = recipe.training_arguments(stage, output_dir="/tmp/iml_hf_bench")
    args.max_steps, args.logging_steps = steps, 10**9
    trainer = IMLTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    start = time.perf_counter()
    trainer.train()
    return steps / (time.perf_counter() - start)


def bare_steps_per_second(recipe, stage, model, train_set, tokenizer, steps: int) -> float:
    """A plain loop: shuffled minibatches, forward, backward, clip, AdamW, schedule."""
    args = recipe.training_arguments(stage, output_dir="/tmp/iml_hf_bench")
    collate = PadCollator(tokenizer.pad_token_id)
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in train_set]
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
    )
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, args.warmup_steps, steps)
    model.train()
    batch_size = args.per_device_train_batch_size
    start = time.perf_counter()
    done = 0
    while done < steps:
        order = torch.randperm(len(rows)).tolist()
        for i in range(0, len(order) - batch_size + 1, batch_size):
            batch = collate([rows[j] for j in order[i : i + batch_size]])
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/toy.yaml")
    parser.add_argument("--stage", default=None, help="stage whose data and settings to use (default: first)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    recipe = parse_recipe([cli.recipe])
    stage = next(s for s in recipe.stages if cli.stage in (None, s.name))
    _, tokenizer, tokenized = prepare_data(recipe)
    train_set = stage_train_set(tokenized["train"], stage, recipe.run.seed)
    results = {"toolkit": [], "bare": []}
    for _ in range(cli.rounds):
        for name, fn in (("toolkit", toolkit_steps_per_second), ("bare", bare_steps_per_second)):
            torch.manual_seed(0)
            model = build_model(recipe.model, tokenizer)
            results[name].append(fn(recipe, stage, model, train_set, tokenizer, cli.steps))
            print(f"{name:8s} {results[name][-1]:7.2f} steps/s")
    ratio = max(results["toolkit"]) / max(results["bare"])
    print(
        f"stage {stage.name}, batch {recipe.training_arguments(stage).per_device_train_batch_size}, "
        f"{cli.threads} thread(s), {cli.steps} steps x {cli.rounds} rounds"
    )
    print(
        f"toolkit / bare = {ratio:.3f} (best rounds: {max(results['toolkit']):.2f} vs {max(results['bare']):.2f} steps/s)"
    )


if __name__ == "__main__":
    main()
