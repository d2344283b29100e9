"""Command line of the analyses: ``python -m iml_hf.analyze layers --model PATH --data SOURCE --output_dir DIR``."""

from __future__ import annotations

import argparse
import sys

from iml_hf.analyze.report import analyze_layers


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse names the flag in its error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not >= 1")
    return value


def natural_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m iml_hf.analyze", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    layers = commands.add_parser(
        "layers", allow_abbrev=False,
        help="per-layer approximate inner loss, norm trajectories, PCA trajectories, linearized layers",
    )
    layers.add_argument("--model", required=True, help="a causal LM folder or hub id (with its tokenizer)")
    layers.add_argument("--data", required=True,
                        help="a toolkit corpus folder, a datasets dataset saved to disk, or a plain text file")
    layers.add_argument("--output_dir", required=True)
    layers.add_argument("--max_tokens", type=positive_int, default=20000, help="stop after this many analysed tokens")
    layers.add_argument("--min_position", type=natural_int, default=4,
                        help="analyse positions from this index on (the paper's filter: the fifth token on)")
    layers.add_argument("--max_final_loss", type=float, default=None,
                        help="keep only trajectories whose model loss is at most this (the paper uses 1.0)")
    layers.add_argument("--seq_len", type=positive_int, default=None,
                        help="window length for text files (default: 128, or the model's positions if fewer)")
    layers.add_argument("--split", default=None, help="dataset split (default: test if present)")
    layers.add_argument("--text_column", default="text")
    layers.add_argument("--batch_size", type=positive_int, default=8)
    layers.add_argument("--pca_tokens", type=natural_int, default=40, help="trajectories drawn in the PCA plot")
    layers.add_argument("--linearize_tokens", type=natural_int, default=256,
                        help="tokens per layer whose linearized layer is computed (GPT-2 style layers; 0 = skip)")
    layers.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    layers.add_argument("--torch_threads", type=positive_int, default=None)
    layers.add_argument("--seed", type=natural_int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = analyze_layers(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    """The headline numbers of layers.json, for the console."""
    names = summary["representations"]
    loss = summary["inner_loss"]
    lines = [f"{summary['architecture']} with {summary['num_layers']} layers, {summary['tokens']} tokens "
             f"({summary['inner_loss_tokens']} pass the inner-loss filters)",
             "approximate inner loss (mean +- std) of the representation after:"]
    lines += [f"  {names[i]:>12}: {m:.3f} +- {s:.3f}" for i, (m, s) in enumerate(zip(loss["mean"], loss["std"]))]
    lines.append("mean norm: " + ", ".join(f"{n:.2f}" for n in summary["norms"]["mean"]))
    for key, stats in summary["norm_statistics"].items():
        if isinstance(stats, dict) and stats.get("sequence_level") is not None:
            lines.append(f"norms never decreasing ({key.replace('_', ' ')}): sequence level "
                         f"{100 * stats['sequence_level']:.1f}%, pair level {100 * stats['pair_level']:.1f}%")
    linear = summary.get("linearized_layers", {})
    if "shares" in linear:
        for i, share in enumerate(linear["shares"], start=1):
            lines.append(f"linearized layer {i} ({linear['tokens_per_layer']} tokens): " +
                         ", ".join(f"{k} {100 * v:.1f}%" for k, v in share.items() if v is not None))
    lines.append(f"wall time {summary['wall_time_s']:.1f} s; layers.json and plots in the output folder")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
