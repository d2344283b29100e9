"""Command line of the analyses:

python -m iml_hf.analyze layers --model PATH --data SOURCE --output_dir DIR
python -m iml_hf.analyze probes --model RUN_OR_CHECKPOINT [--data CORPUS] --output_dir DIR
"""

from __future__ import annotations

import argparse
import sys

from iml_hf.analyze.report import analyze_layers
from iml_hf.analyze.sources import PAPER_CORPORA
from iml_hf.args import PROBE_POSITIONS, PROBE_TARGETS


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


def non_negative_float(text: str) -> float:
    """An argparse type: a number >= 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m iml_hf.analyze", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    layers = commands.add_parser(
        "layers",
        allow_abbrev=False,
        help="Wu & Varshney's layer analysis: inner loss (Fig. 2), norm trajectories (Table 1, Fig. 3), "
        "the linear model and Proposition 1 (Table 2)",
    )
    layers.add_argument("--model", required=True, help="a causal LM folder or hub id (with its tokenizer)")
    layers.add_argument(
        "--data",
        default=None,
        help="a toolkit corpus folder, a dataset saved with save_to_disk, a text file, a hub "
        "dataset id, or (with --corpus) a local copy of that corpus; default: --corpus's hub id",
    )
    layers.add_argument(
        "--corpus",
        choices=sorted(PAPER_CORPORA),
        default=None,
        help="one of the paper's corpora: its test split and filters (rows of >= 10 words; "
        "5,000 random rows of 1bw); text files are then read one row per line",
    )
    layers.add_argument("--output_dir", required=True)
    layers.add_argument("--max_tokens", type=positive_int, default=20000, help="stop after this many analysed tokens")
    layers.add_argument(
        "--min_position",
        type=natural_int,
        default=4,
        help="analyse positions from this index on (the paper's filter: the fifth token on)",
    )
    layers.add_argument(
        "--max_final_loss",
        type=non_negative_float,
        default=1.0,
        help="Figure 2 keeps only trajectories whose model loss is at most this (the paper: 1.0)",
    )
    layers.add_argument(
        "--min_words",
        type=natural_int,
        default=None,
        help="keep text rows of at least this many words (text files are then read one row per line)",
    )
    layers.add_argument(
        "--max_samples",
        type=positive_int,
        default=None,
        help="draw this many text rows at random (text files are then read one row per line)",
    )
    layers.add_argument(
        "--seq_len",
        type=positive_int,
        default=None,
        help="window length for text files, truncation for rows (default: 128, or the model's positions if fewer)",
    )
    layers.add_argument("--split", default=None, help="dataset split (default: test if present)")
    layers.add_argument("--text_column", default="text")
    layers.add_argument("--batch_size", type=positive_int, default=8)
    layers.add_argument(
        "--pca_samples",
        type=natural_int,
        default=None,
        help="trajectories in the Figure-3 PCA (default: the paper's 50 for GPT-2, 150 otherwise)",
    )
    layers.add_argument(
        "--linear_model_tokens",
        type=natural_int,
        default=200,
        help="tokens whose linear model (eqs. 10-12) is built at every layer for Table 2 (GPT-2 blocks; 0 = skip)",
    )
    layers.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16", "auto"),
        default="float32",
        help="weights' dtype (norms, losses and the linear model are computed in float32/64)",
    )
    layers.add_argument(
        "--device_map", default=None, help="'auto' spreads a large checkpoint over the GPUs (and CPU) with accelerate"
    )
    layers.add_argument("--revision", default="main", help="branch, tag or commit of a hub checkpoint")
    layers.add_argument(
        "--device", default=None, help="cpu, cuda, ... (default: cuda if available; not with --device_map)"
    )
    layers.add_argument("--torch_threads", type=positive_int, default=None)
    layers.add_argument("--seed", type=natural_int, default=0)
    add_probes_parser(commands)
    return parser


def at_least_two(text: str) -> int:
    """An argparse type: an integer >= 2."""
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text} is not >= 2")
    return value


def add_probes_parser(commands) -> None:
    probes = commands.add_parser(
        "probes",
        allow_abbrev=False,
        help="linear probes of each variable's hidden states at every layer: its define tag, whether its "
        "definition is consistent, its referent and its attributes",
    )
    probes.add_argument(
        "--model", required=True, help="a run folder of iml_hf.train, a model folder or a hub id (with its tokenizer)"
    )
    probes.add_argument(
        "--data",
        default=None,
        help="a toolkit corpus folder (save_to_disk, or push_corpus's parquet layout); default: the "
        "corpus the run in --model was trained on, rebuilt from its results.json",
    )
    probes.add_argument("--output_dir", required=True)
    probes.add_argument(
        "--subsets",
        nargs="+",
        default=None,
        help="probe the variables defined in these subsets only (default: every subset whose name "
        "gives the define tag)",
    )
    probes.add_argument(
        "--targets",
        nargs="+",
        default=["tag", "consistent", "attributes"],
        help=f"some of {list(PROBE_TARGETS)} or attribute/<relation> (default: tag consistent attributes)",
    )
    probes.add_argument("--folds", type=at_least_two, default=5, help="cross-validation folds, grouped by referent")
    probes.add_argument(
        "--position",
        choices=PROBE_POSITIONS,
        default="mean",
        help="the mean over the variable's tokens, or its last token",
    )
    probes.add_argument("--seed", type=natural_int, default=0, help="folds and the shuffled-label control")
    probes.add_argument("--batch_size", type=positive_int, default=256)
    probes.add_argument("--max_iter", type=positive_int, default=1000, help="iterations of each logistic regression")
    probes.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16", "auto"),
        default="float32",
        help="weights' dtype (the forward runs in it; its hidden states are cast to float32 for the probes)",
    )
    probes.add_argument("--revision", default="main", help="branch, tag or commit of a hub checkpoint")
    probes.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    probes.add_argument("--torch_threads", type=positive_int, default=None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "probes":
        from iml_hf.analyze.probe_report import analyze_probes
        from iml_hf.analyze.probe_report import format_summary as format_probes

        run, show = analyze_probes, format_probes
    else:
        run, show = analyze_layers, format_summary
    try:
        summary = run(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(show(summary))
    return 0


def format_summary(summary: dict) -> str:
    """The headline numbers of layers.json, for the console."""
    names = summary["representations"]
    loss = summary["inner_loss"]
    filters = summary["filters"]
    lines = [f"{summary['architecture']} with {summary['num_layers']} layers, {summary['tokens']} tokens"]
    if loss["tokens"]:
        lines.append(
            f"Figure 2, approximate inner loss (mean +- std) over {loss['tokens']} tokens "
            f"(position >= {filters['min_position']}, final loss <= {filters['max_final_loss']}):"
        )
        lines += [f"  {names[i]:>12}: {m:.3f} +- {s:.3f}" for i, (m, s) in enumerate(zip(loss["mean"], loss["std"]))]
    else:
        lines.append(f"Figure 2: no token has a final loss <= {filters['max_final_loss']} (raise --max_final_loss)")
    lines.append("mean norm: " + ", ".join(f"{n:.2f}" for n in summary["norms"]["mean"]))
    table = summary["norm_statistics"]["table1"]
    if table["sequence_level"] is not None:
        lines.append(
            f"Table 1 ({table['trajectory']}, {table['tokens']} tokens): non-decreasing norms, sequence level "
            f"{100 * table['sequence_level']:.1f}% (chance 2^-{table['pairs_per_trajectory']} = "
            f"{100 * table['chance_sequence_level']:.3g}%), pair level {100 * table['pair_level']:.1f}% "
            "(chance 50%)"
        )
    linear = summary.get("linear_model")
    if linear and "skipped" in linear:
        lines.append(f"Table 2 skipped: {linear['skipped']}")
    elif linear and linear["table2"]["proposition_1"] is not None:
        agreement = [layer["agreement"] for layer in linear["layers"]]
        lines.append(
            f"Table 2 (layers {linear['table2']['layers']}, {linear['table2']['matrices']} matrices): "
            f"{100 * linear['table2']['proposition_1']:.1f}% meet Proposition 1's condition; "
            f"it agrees with |Wz| >= |z| on {100 * min(agreement):.1f}%+ of every layer's matrices"
        )
    lines.append(f"wall time {summary['wall_time_s']:.1f} s; layers.json and plots in the output folder")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
