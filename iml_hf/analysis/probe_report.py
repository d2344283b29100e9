"""``analyze probes`` and the stage-end probes: fit every probe target on a model's hidden states
and write probes.json + one plot per target (``iml_hf.analysis.probes`` does the probing)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from iml_hf.analysis.probes import (
    ProbeError,
    ProbeSet,
    build_probe_set,
    hidden_representations,
    score_probe,
    variable_inputs,
)
from iml_hf.utils.io import write_json_atomic


def representation_names(count: int) -> list[str]:
    """Names of the hidden states: the embeddings' output, then after layer 1 .. L."""
    return ["embeddings"] + [f"layer {i}" for i in range(1, count)]


def file_name(target: str) -> str:
    """The plot of a target: ``tag.png``, ``attribute-when_was_x_born.png``."""
    return target.replace("/", "-") + ".png"


@dataclass
class ProbeInputs:
    """What the probes read, built once from the corpus and tokenizer (for every stage end):
    the probe set and each variable's token ids; or why there is nothing to probe."""

    probe_set: ProbeSet | None
    inputs: list[list[int]]
    offset: int
    targets: list[str]
    skipped: str | None = None

    @classmethod
    def build(cls, corpus, tokenizer, subsets: list[str] | None, targets: list[str], task: Any = None) -> ProbeInputs:
        """The probe inputs, or (on a ProbeError) an empty one that says why it was skipped; ``task``
        (the run's) declares the subsets' labels."""
        try:
            probe_set = build_probe_set(corpus, subsets, task=task)
            inputs, offset = variable_inputs(tokenizer, probe_set.variables)
            return cls(probe_set, inputs, offset, probe_set.expand(targets))
        except ProbeError as error:
            return cls(None, [], 0, [], skipped=str(error))


def run_probes(model, probes: ProbeInputs, options: Any, out: Path, source: dict[str, Any]) -> dict[str, Any]:
    """Fit and score every target on the model's hidden states and write probes.json and the plots
    into ``out`` (after everything is computed: nothing is written when it fails). ``options``
    carries folds, position, seed, batch_size and max_iter (the CLI's arguments or
    ``ProbeArguments``). ProbeError when there is nothing to probe or no target can be fitted."""
    if probes.skipped:
        raise ProbeError(probes.skipped)
    started = time.perf_counter()
    layers = hidden_representations(model, probes.inputs, probes.offset, options.position, options.batch_size)
    represented = time.perf_counter()
    probe_set = probes.probe_set
    assert probe_set is not None, "ProbeInputs.build made one unless it skipped"
    targets: dict[str, dict[str, Any]] = {}
    for target in probes.targets:
        index, labels, groups = probe_set.dataset(target)
        try:
            result = score_probe(layers[:, index], labels, groups, options.folds, options.seed, options.max_iter)
        except ProbeError as error:
            targets[target] = {"skipped": str(error)}
            continue
        result["group_by"] = "variable" if target == "referent" else "referent"
        if target in probe_set.relations:
            result["relation"] = probe_set.relations[target]
        targets[target] = result
    if all("skipped" in t for t in targets.values()):
        reasons = "; ".join(f"{name}: {t['skipped']}" for name, t in targets.items())
        raise ProbeError(f"no probe target can be fitted ({reasons or 'no targets'})")
    subsets: dict[str, int] = {}
    for subset in probe_set.subsets:
        subsets[subset] = subsets.get(subset, 0) + 1
    summary: dict[str, Any] = {
        **source,
        "architecture": type(model).__name__,
        "num_layers": layers.shape[0] - 1,
        "representations": representation_names(layers.shape[0]),
        "hidden_size": int(layers.shape[2]),
        "variables": len(probe_set.variables),
        "subsets": subsets,
        "position": options.position,
        "folds": options.folds,
        "seed": options.seed,
        "target_order": list(targets),  # probes.json sorts its keys
        "targets": targets,
    }
    fitted = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for target, result in targets.items():
        if "skipped" not in result:
            result["plot"] = save_plot(out / file_name(target), target, result, summary)
    summary["timings_s"] = {
        "representations": round(represented - started, 3),
        "probes": round(fitted - represented, 3),
    }
    summary["wall_time_s"] = round(time.perf_counter() - started, 2)
    write_json_atomic(out / "probes.json", summary)
    return summary


def save_plot(path: Path, target: str, result: dict[str, Any], summary: dict[str, Any]) -> str:
    """Accuracy per layer with its interval over folds, the shuffled-label control and the chance line."""
    from iml_hf.reporting.plots import RUN_DPI, RUN_FORMATS, plt, save_figure  # drawn at stage ends too: PNG only

    names = summary["representations"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(names) + 2), 3.6))
    for key, label, colour, shift in (
        ("accuracy", "probe", "tab:blue", 0.0),
        ("shuffled", "shuffled labels", "tab:gray", 0.08),
    ):
        values = result[key]
        mean = np.asarray(values["mean"])
        error = np.abs(np.vstack([mean - np.asarray(values["ci_low"]), np.asarray(values["ci_high"]) - mean]))
        ax.errorbar(x + shift, mean, yerr=np.nan_to_num(error), marker="o", ms=4, capsize=3, color=colour, label=label)
    ax.axhline(result["chance"], color="tab:red", ls="--", lw=1, label=f"chance {result['chance']:.2f}")
    ax.set_xticks(x, names, rotation=30, fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("held-out accuracy")
    ax.set_title(
        f"{target}: {result['n']} variables, {len(result['classes'])} classes\n{result['folds']} folds "
        f"grouped by {result['group_by']}, 95% t intervals over folds",
        fontsize=8,
    )
    ax.grid(alpha=0.3)
    fig.legend(
        *ax.get_legend_handles_labels(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False
    )  # outside the data
    fig.tight_layout()
    save_figure(fig, path, RUN_DPI, RUN_FORMATS)
    return path.name


def format_summary(summary: dict[str, Any]) -> str:
    """A per-layer table per target, for the console."""
    names = summary["representations"]
    subsets = ", ".join(f"{s} {n}" for s, n in summary["subsets"].items())
    lines = [
        (
            f"{summary['architecture']} with {summary['num_layers']} layers; {summary['variables']} variables "
            f"({subsets}), {summary['position']} over each variable's tokens"
        )
    ]
    for target, result in summary["targets"].items():
        if "skipped" in result:
            lines.append(f"\n{target}: skipped ({result['skipped']})")
            continue
        lines.append(
            f"\n{target}: {result['n']} variables, {len(result['classes'])} classes, {result['groups']} "
            f"groups ({result['group_by']}), {result['folds']} folds; chance {result['chance']:.3f}"
        )
        lines.append(f"  {'representation':>14}  {'accuracy [95% CI]':<24} shuffled labels")
        accuracy, shuffled = result["accuracy"], result["shuffled"]
        for i, name in enumerate(names):
            interval = f"{accuracy['mean'][i]:.3f} [{accuracy['ci_low'][i]:.3f}, {accuracy['ci_high'][i]:.3f}]"
            lines.append(f"  {name:>14}  {interval:<24} {shuffled['mean'][i]:.3f}")
        if result["unconverged_fits"]:
            lines.append(f"  ({result['unconverged_fits']} fits stopped at max_iter before converging)")
    lines.append(
        f"\nwall time {summary['wall_time_s']:.1f} s (hidden states {summary['timings_s']['representations']:.1f} s); "
        "probes.json and plots in the output folder"
    )
    return "\n".join(lines)


def analyze_probes(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``analyze probes`` does; inputs are checked before anything is written."""
    from iml_hf.analysis.layer_report import load_model
    from iml_hf.analysis.sources import load_toolkit_corpus, run_corpus, run_of
    from iml_hf.config.measurement_args import check_probe_targets

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    check_probe_targets("--targets", list(args.targets))
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise ValueError(f"--output_dir {args.output_dir!r} is a file, not a folder")
    run = run_of(args.model)
    if args.data is None and run is None:
        raise ValueError(
            f"--model {args.model!r} is not a run folder of iml_hf.train (no results.json), so pass "
            "--data with the toolkit corpus to probe"
        )
    if args.data:
        corpus = load_toolkit_corpus(args.data)
    else:
        assert run is not None, "without --data, --model is a run folder (checked above)"
        corpus = run_corpus(run)
    model, tokenizer = load_model(
        SimpleNamespace(model=args.model, revision=args.revision, dtype=args.dtype, device_map=None, device=args.device)
    )
    probes = ProbeInputs.build(corpus, tokenizer, args.subsets, list(args.targets))
    if probes.skipped:
        raise ValueError(probes.skipped)
    positions = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(ids) for ids in probes.inputs)
    if positions and longest > positions:
        raise ValueError(f"a variable takes {longest} tokens, more than the {positions} positions of --model")
    source = {"model": args.model, "data": args.data or f"{run} (rebuilt from its recipe)", "dtype": args.dtype}
    return run_probes(model, probes, args, Path(args.output_dir), source)
