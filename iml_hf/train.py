"""Command line entry: ``python -m iml_hf.train RECIPE.yaml [--key=value ...]``.

Also runs under ``accelerate launch -m iml_hf.train RECIPE.yaml ...``. A bad recipe or argument
prints what is wrong and exits with code 2 before anything is written.
"""

from __future__ import annotations

import sys
from typing import Any

from iml_hf.recipe import RecipeError, parse_recipe


def format_summary(results: dict[str, Any]) -> str:
    """EM per evaluation set (rows) at the end of each stage (columns), every contrast the task
    declares at the end of each stage, and the wall time."""
    stages = results["stages"]
    sets = list(dict.fromkeys(name for stage in stages.values() for name in stage["em"]))
    contrasts = {name: (a, b) for name, a, b in results.get("contrast_sets", [])}
    width = max([len(s) for s in sets] + [len(n) for n in contrasts] + [12]) + 2
    header = "".rjust(width) + "".join(name[:12].rjust(13) for name in stages)
    lines = ["exact match at the end of each stage", header]
    for name in sets:
        lines.append(name.ljust(width) + "".join(f"{stage['em'].get(name, float('nan')):13.3f}" for stage in stages.values()))
    if contrasts:
        lines += ["contrasts EM(a) - EM(b) at the end of each stage", header]
        for name, (a, b) in contrasts.items():
            values = [stage.get("contrasts", {}).get(name) for stage in stages.values()]
            if any(v is not None for v in values):
                cells = "".join("-".rjust(13) if v is None else f"{v:+13.3f}" for v in values)
                lines.append(name.ljust(width) + cells + f"   ({a} - {b})")
    lines.append("seconds".ljust(width) + "".join(f"{stage['wall_time_s']:13.1f}" for stage in stages.values()))
    lines.append(f"total wall time {results['wall_time_s']:.1f} s")
    return "\n".join(lines)


def format_branches(branched: dict[str, Any]) -> str:
    """The trunk's stage-end table, then each contrast of the branch stages per branch: at the
    branch stage's start (on the branch's split), at its end, and the end minus the start."""
    from iml_hf.nested_report import seed_summary

    lines = ["trunk (shared by every branch)", format_summary(branched["trunk"]), ""]
    if not branched["branches"]:
        return "\n".join(lines)
    summary = seed_summary(branched["branches"])
    lines.append(f"contrasts per branch (start of {summary['stage']} -> its end; end - start)")
    for name, entry in summary["contrasts"].items():
        a, b = entry["sets"]
        for index, row in entry["per_branch"].items():
            lines.append(f"{name:<22} branch {index}: {row['start']:+.3f} -> {row['end']:+.3f}  "
                         f"({row['corrected']:+.3f})   ({a} - {b})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the recipe and command line, run every stage, print and return the results."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        recipe = parse_recipe(argv)
    except RecipeError as error:
        print(f"iml_hf.train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    import datasets

    from iml_hf.pipeline import run  # heavy imports only once the arguments are known to be good

    datasets.disable_progress_bars()  # corpus building and tokenizing take seconds; keep the log readable
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Writing model shards" at every checkpoint (the Trainer's bar stays)

    try:
        if recipe.run.branches:
            from iml_hf.branching import run_branched

            branched = run_branched(recipe)
            results = branched["trunk"]
        else:
            results = run(recipe)
    except RecipeError as error:  # a launch that cannot work (run checks it before training)
        print(f"iml_hf.train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # the work folder stays; the same command resumes it
        print(f"iml_hf.train: interrupted; {recipe.run.output_dir} is unchanged and rerunning the same command "
              f"resumes the run from {recipe.run.output_dir}.partial", file=sys.stderr)
        raise SystemExit(130) from None
    from accelerate import PartialState

    if PartialState().is_main_process and recipe.run.branches:
        print(format_branches(branched))
        print(f"results written to {recipe.run.output_dir}/trunk and branch<b>/results.json")
        return branched
    if PartialState().is_main_process:
        print(format_summary(results))
        print(f"results written to {recipe.run.output_dir}/results.json")
    return results


if __name__ == "__main__":
    main()
