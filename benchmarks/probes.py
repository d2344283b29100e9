"""Wall time of the linear probes on 2,000 variables, against a plain forward pass over the same inputs.

    python benchmarks/probes.py [--variables 2000] [--layers 4] [--hidden_size 128] [--repeats 3] [--threads 2]

An entity-QA corpus with enough entities for ``--variables`` defined variables (the synthetic
knowledge base: qd1consis, qd2incons, d1consis, d2consis; six relations of 2 or 20 values), its
WordLevel tokenizer, and a randomly initialised GPT-2 with ``--layers`` layers (d_model
``--hidden_size``), so every probe sees ``--layers`` + 1 hidden states (the embeddings' output and
each layer's). Timed in this process, alternated ``--repeats`` times so that machine noise hits
every part alike, medians printed:

* reading the hidden states of every variable (``hidden_representations``), next to one plain
  ``model(ids)`` forward over the same inputs at the same batch size (the ratio is printed);
* the probes of the define tag and of consistency (binary, 5 grouped folds, the shuffled-label
  control included: 2 x 5 x 2 logistic regressions per hidden state);
* the probes of the six attributes of the synthetic knowledge base (five of 20 values, gender of 2).

The probes' time does not depend on the model beyond its width and depth; a trained model's
hidden states may separate better or worse, which changes the iterations each fit needs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from iml_hf.analysis.probes import (
    build_probe_set,
    hidden_representations,
    score_probe,
    variable_inputs,
)
from iml_hf.data.tokenization import build_wordlevel_tokenizer
from iml_hf.tasks.entities import EntitiesTask

DEFINED_SHARE = 0.8  # qd1consis + qd2incons + d1consis + d2consis of the default fractions


def time_targets(layers: np.ndarray, probe_set, targets: list[str]) -> tuple[float, dict[str, list[float]]]:
    tic = time.perf_counter()
    accuracy = {}
    for target in targets:
        index, labels, groups = probe_set.dataset(target)
        accuracy[target] = score_probe(layers[:, index], labels, groups, folds=5, seed=0)["accuracy"]["mean"]
    return time.perf_counter() - tic, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variables", type=int, default=2000)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tic = time.perf_counter()
    corpus = EntitiesTask(num_entities=round(args.variables / DEFINED_SHARE)).build(0)
    probe_set = build_probe_set(corpus)
    tokenizer = build_wordlevel_tokenizer(corpus)
    inputs, offset = variable_inputs(tokenizer, probe_set.variables)
    built = time.perf_counter() - tic
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            n_layer=args.layers,
            n_embd=args.hidden_size,
            n_head=4,
            vocab_size=len(tokenizer),
            n_positions=64,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).eval()
    binary = ["tag", "consistent"]
    attributes = probe_set.expand(["attributes"])
    reading, forward, binary_s, attribute_s = [], [], [], []
    for _ in range(args.repeats):
        tic = time.perf_counter()
        layers = hidden_representations(model, inputs, offset, "mean", args.batch_size)
        reading.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(inputs), args.batch_size):
                model(torch.tensor(inputs[start : start + args.batch_size]))
        forward.append(time.perf_counter() - tic)
        seconds, binary_accuracy = time_targets(layers, probe_set, binary)
        binary_s.append(seconds)
        seconds, attribute_accuracy = time_targets(layers, probe_set, attributes)
        attribute_s.append(seconds)
    read, plain = statistics.median(reading), statistics.median(forward)
    n, states = len(probe_set.variables), layers.shape[0]
    print(
        f"{n} variables ({len(corpus['train'])} + {len(corpus['test'])} corpus rows, built and labelled in "
        f"{built:.1f} s); GPT-2 with {args.layers} layers, d_model {args.hidden_size}: {states} hidden states "
        f"(embeddings + {args.layers} layers); {args.threads} torch threads, one BLAS thread per fit; "
        f"medians of {args.repeats}"
    )
    print(
        f"  hidden states of every variable: {read:.2f} s (plain forward over the same inputs {plain:.2f} s; "
        f"ratio {read / plain:.2f}x)"
    )
    total = statistics.median(binary_s)
    print(
        f"  tag + consistent probes ({n} x {states} representations, 5 folds, shuffled control): {total:.1f} s "
        f"({total / states:.2f} s per hidden state; {(read + total) / plain:.0f}x the plain forward with the reading)"
    )
    total = statistics.median(attribute_s)
    print(
        f"  {len(attributes)} attribute probes ({', '.join(a.split('/')[1] for a in attributes)}): {total:.1f} s "
        f"({total / states / len(attributes):.2f} s per attribute and hidden state)"
    )
    print(
        "  last-layer accuracy (random weights: near chance): "
        + ", ".join(f"{t} {v[-1]:.2f}" for t, v in {**binary_accuracy, **attribute_accuracy}.items())
    )


if __name__ == "__main__":
    main()
