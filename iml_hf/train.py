"""Command line entry: ``python -m iml_hf.train RECIPE.yaml [--key=value ...]``.

Also runs under ``accelerate launch -m iml_hf.train RECIPE.yaml ...``. A bad recipe or argument
prints what is wrong and exits with code 2 before anything is written.
"""

from __future__ import annotations

import sys
from typing import Any

from iml_hf.config import RecipeError, parse_recipe


def _interval_cell(value: float | None, bounds: tuple[float, float] | None) -> str:
    """``+0.022 [-0.018, +0.062]`` (``-`` where the contrast was not measured)."""
    if value is None:
        return "-"
    return f"{value:+.3f}" + (f" [{bounds[0]:+.3f}, {bounds[1]:+.3f}]" if bounds is not None else "")


def format_summary(results: dict[str, Any]) -> str:
    """EM per evaluation set (rows, with its examples n) at the end of each stage (columns), every
    contrast the task declares at the end of each stage with this run's 95% interval (Newcombe,
    over the two sets' examples: ``model_card.contrast_interval``), and the wall time."""
    from iml_hf.reporting.model_card import CONFIDENCE, contrast_interval

    stages = results["stages"]
    sets = list(dict.fromkeys(name for stage in stages.values() for name in stage["em"]))
    sizes = {name: n for stage in stages.values() for name, n in (stage.get("n") or {}).items()}
    contrasts = {name: (a, b) for name, a, b in results.get("contrast_sets", [])}
    width = max([len(s) for s in sets] + [len(n) for n in contrasts] + [8]) + 2
    column = max([len(name) for name in stages] + [7]) + 2
    header = "".ljust(width) + "n".rjust(7) + "".join(name.rjust(column) for name in stages)
    lines = ["exact match at the end of each stage (n: examples per set)", header]
    for name in sets:
        n = f"{sizes[name]:,}" if name in sizes else "-"
        lines.append(
            name.ljust(width)
            + n.rjust(7)
            + "".join(
                f"{stage['em'][name]:{column}.3f}" if name in stage["em"] else "-".rjust(column)
                for stage in stages.values()
            )
        )
    if contrasts:
        cells = {
            name: [
                _interval_cell(stage.get("contrasts", {}).get(name), contrast_interval(stage, a, b))
                for stage in stages.values()
            ]
            for name, (a, b) in contrasts.items()
        }
        cells = {name: row for name, row in cells.items() if any(c != "-" for c in row)}
        wide = max([len(c) for row in cells.values() for c in row] + [column - 2]) + 2
        lines += [
            "",
            f"contrasts EM(a) - EM(b) at the end of each stage [{CONFIDENCE:.0%} interval of this run, "
            "over the two sets' examples]",
            "".ljust(width) + "".join(name.rjust(wide) for name in stages),
        ]
        for name, row in cells.items():
            a, b = contrasts[name]
            lines.append(name.ljust(width) + "".join(c.rjust(wide) for c in row) + f"   ({a} - {b})")
    lines += [
        "",
        "seconds".ljust(width) + " " * 7 + "".join(f"{stage['wall_time_s']:{column}.1f}" for stage in stages.values()),
        f"total wall time {results['wall_time_s']:.1f} s",
    ]
    return "\n".join(lines)


def format_branches(branched: dict[str, Any]) -> str:
    """The trunk's stage-end table, then each contrast of the branch stages per branch: at the
    branch stage's start (on the branch's split), at its end with this run's 95% interval, and the
    end minus the start."""
    from iml_hf.reporting.model_card import contrast_interval
    from iml_hf.reporting.nested_report import seed_summary

    lines = ["trunk (shared by every branch)", format_summary(branched["trunk"]), ""]
    if not branched["branches"]:
        return "\n".join(lines)
    summary = seed_summary(branched["branches"])
    lines.append(f"contrasts per branch (start of {summary['stage']} -> its end; end - start)")
    for name, entry in summary["contrasts"].items():
        a, b = entry["sets"]
        for index, row in entry["per_branch"].items():
            results = branched["branches"].get(int(index)) or {}
            bounds = contrast_interval((results.get("stages") or {}).get(summary["stage"], {}), a, b)
            end = _interval_cell(row["end"], bounds)
            lines.append(
                f"{name:<22} branch {index}: {row['start']:+.3f} -> {end}  ({row['corrected']:+.3f})   ({a} - {b})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the recipe and command line, run every stage, print and return the results.

    ``--quiet`` (for scripts) prints only errors and the final table: no banners, bars, log lines
    or library warnings while training (``iml_hf.utils.console.set_verbosity``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet = "--quiet" in argv
    argv = [a for a in argv if a != "--quiet"]
    try:
        recipe = parse_recipe(argv)
    except RecipeError as error:
        print(f"iml_hf.train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    from iml_hf.training.pipeline import run  # heavy imports only once the arguments are known to be good
    from iml_hf.utils import console

    verbose = console.is_verbose()
    console.set_verbosity(verbose and not quiet)
    try:
        if recipe.run.branches:
            from iml_hf.training.branching import run_branched

            branched = run_branched(recipe)
            results = branched["trunk"]
        else:
            results = run(recipe)
    except RecipeError as error:  # a launch that cannot work (run checks it before training)
        print(f"iml_hf.train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # the work folder stays; the same command resumes it
        print(
            f"iml_hf.train: interrupted; {recipe.run.output_dir} is unchanged and rerunning the same command "
            f"resumes the run from {recipe.run.output_dir}.partial",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    finally:
        console.set_verbosity(verbose)
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process and recipe.run.branches:
        print(format_branches(branched))
        print(f"results written to {recipe.run.output_dir}/trunk and branch<b>/results.json")
    elif state.is_main_process:
        print(format_summary(results))
        print(f"results written to {recipe.run.output_dir}/results.json")
    if state.use_distributed:  # gloo's or NCCL's threads outliving the interpreter can abort a process at exit
        state.wait_for_everyone()
        state.destroy_process_group()
    return branched if recipe.run.branches else results


if __name__ == "__main__":
    main()
