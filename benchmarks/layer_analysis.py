"""Wall time of ``analyze layers`` per 1,000 tokens on GPT-2-shaped models, against a plain forward pass.

    python benchmarks/layer_analysis.py [--tokens 1000] [--linear_model_tokens 20] [--threads 2]

For a 4-layer model (d_model 128, 4 heads, the shape of ``iml_hf.text_lm``) and a 12-layer one
(d_model 768, 12 heads, vocabulary 50,257: GPT-2 small), randomly initialised (the timing does
not depend on the weights), on sequences of 128 random tokens:

* the per-token pass (Figure 2's inner loss at every layer, Table 1's norms): ``--tokens``
  tokens, timed inside ``analyze_model``, next to one plain ``model(ids)`` forward over the same
  tokens, alternated ``--repeats`` times in this process so that machine noise hits both; the
  ratio of the medians is printed;
* Table 2's linear model (eqs. 10-12 and the eigendecomposition of Proposition 1, float64, at
  every layer): timed on ``--linear_model_tokens`` sampled tokens and reported per 1,000 tokens
  (a linear extrapolation: the cost is the same for every token);
* the PCA sample (Figure 3): one forward pass per sampled sequence.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from iml_hf.analysis.layer_report import analyze_model

SHAPES = {
    "4-layer (d=128)": {"n_layer": 4, "n_embd": 128, "n_head": 4, "vocab_size": 2048},
    "12-layer (d=768, GPT-2 small)": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257},
}


def options(tokens: int, linear_tokens: int, pca: int) -> SimpleNamespace:
    return SimpleNamespace(
        max_tokens=tokens,
        min_position=4,
        max_final_loss=1.0,
        batch_size=8,
        pca_samples=pca,
        linear_model_tokens=linear_tokens,
        seed=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--linear_model_tokens", type=int, default=20)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, shape in SHAPES.items():
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_positions=1024, **shape)).eval()
        count = -(-args.tokens // (args.seq_len - 1))
        sequences = torch.randint(0, shape["vocab_size"], (count, args.seq_len)).tolist()
        layer_times, forward_times = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                summary = analyze_model(model, sequences, options(args.tokens, 0, 0), Path(tmp), {})
                layer_times.append(summary["timings_s"]["layers"])
                tic = time.perf_counter()
                with torch.no_grad():
                    for start in range(0, count, 8):
                        model(torch.tensor(sequences[start : start + 8]))
                forward_times.append(time.perf_counter() - tic)
            summary = analyze_model(model, sequences, options(args.tokens, args.linear_model_tokens, 50), Path(tmp), {})
        per_thousand = 1000 / summary["tokens"]
        layers, forward = statistics.median(layer_times), statistics.median(forward_times)
        linear = summary["timings_s"]["linear_model"] / summary["linear_model"]["tokens"] * 1000
        print(f"{name}: {summary['tokens']} tokens")
        print(
            f"  Figure 2 + Table 1 pass: {layers * per_thousand:.2f} s per 1,000 tokens "
            f"(plain forward {forward * per_thousand:.2f} s; ratio {layers / forward:.1f}x, "
            f"medians of {args.repeats})"
        )
        print(
            f"  Table 2 linear model at all {shape['n_layer']} layers: {linear:.1f} s per 1,000 tokens "
            f"(measured on {summary['linear_model']['tokens']} tokens)"
        )
        print(f"  Figure 3 sample of {summary['pca']['samples']}: {summary['timings_s']['pca_and_sampling']:.2f} s")


if __name__ == "__main__":
    main()
