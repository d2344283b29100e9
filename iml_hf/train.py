"""Command line entry: ``python -m iml_hf.train RECIPE.yaml [--key=value ...]``.

Also runs under ``accelerate launch -m iml_hf.train RECIPE.yaml ...``. A bad recipe or argument
prints what is wrong and exits with code 2 before anything is written.
"""

from __future__ import annotations

import sys
from typing import Any

from iml_hf.recipe import RecipeError, parse_recipe


def format_summary(results: dict[str, Any]) -> str:
    """EM per subset at the end of each stage, the IML gap and the wall time, as a small table."""
    stages = results["stages"]
    subsets = list(next(iter(stages.values()))["em"])
    lines = ["stage".ljust(12) + "".join(s.rjust(10) for s in subsets) + "   seconds"]
    for name, stage in stages.items():
        ems = "".join(f"{stage['em'].get(s, float('nan')):10.3f}" for s in subsets)
        lines.append(name.ljust(12) + ems + f"{stage['wall_time_s']:10.1f}")
    if results.get("iml_gap") is not None:
        lines.append(f"iml_gap = {results['iml_gap']:+.4f}")
    lines.append(f"total wall time {results['wall_time_s']:.1f} s")
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

    results = run(recipe)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(format_summary(results))
        print(f"results written to {recipe.run.output_dir}/results.json")
    return results


if __name__ == "__main__":
    main()
