"""Command line of the analyses:

python -m iml_hf.analyze layers --model PATH --data SOURCE --output_dir DIR
python -m iml_hf.analyze probes --model RUN_OR_CHECKPOINT [--data CORPUS] --output_dir DIR
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from iml_hf.analysis.layer_report import analyze_layers
from iml_hf.analysis.sources import PAPER_CORPORA
from iml_hf.config.help import dataclass_keys
from iml_hf.config.help import show as recipe_value
from iml_hf.config.measurement_args import LayerAnalysisArguments, ProbeArguments

#: Recipe keys that are no flags: ``enabled`` switches the stage-end analysis on, and the recipe's
#: ``split`` (the train or test rows of the run's corpus) is not ``--split`` (any split of any dataset).
RECIPE_ONLY_KEYS = ("enabled", "split")


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


def checked(cls: type, name: str, convert: Callable[[str], Any], nullable: bool) -> Callable[[str], Any]:
    """An argparse type for field ``name`` of ``cls``: ``convert`` (``null`` is None where the field takes
    None), then the dataclass's own checks, so the flag accepts what the recipe key accepts and argparse
    names the flag in its error."""

    def parse(text: str) -> Any:
        value = None if nullable and text == "null" else convert(text)
        try:
            cls(**{name: value})
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    parse.__name__ = convert.__name__  # argparse's "invalid int value: 'x'"
    return parse


def add_settings(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per key of a recipe section (``cls``) with the key's type, default, help and choices, so
    the CLI and the recipe share one home; list keys are checked by the analysis, which can suggest a name."""
    for doc in dataclass_keys(cls, "", skip=RECIPE_ONLY_KEYS):
        union = typing.get_origin(doc.annotation) in (typing.Union, types.UnionType)
        members = typing.get_args(doc.annotation) if union else (doc.annotation,)
        value_type = next(t for t in members if t is not type(None))  # int | None -> int
        is_list = typing.get_origin(value_type) is list
        default = " ".join(doc.default) if isinstance(doc.default, list) else recipe_value(doc.default)
        parser.add_argument(
            f"--{doc.key}",
            type=str if is_list else checked(cls, doc.key, value_type, type(None) in members),
            nargs="+" if is_list else None,
            choices=doc.choices or None,
            default=doc.default,
            help=f"{doc.help} (default: {default})".replace("%", "%%"),
        )


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
    add_settings(layers, LayerAnalysisArguments)
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
    add_probes_parser(commands)
    return parser


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
    add_settings(probes, ProbeArguments)
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
        from iml_hf.analysis.probe_report import analyze_probes
        from iml_hf.analysis.probe_report import format_summary as format_probes

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
