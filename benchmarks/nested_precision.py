"""Precision per CPU-minute: one split per seed (the old design) against counterbalanced, nested
stage-2 branches, at equal CPU time, for one contrast of the branch stage.

    python benchmarks/nested_precision.py recipes/entities_cpu.yaml --seeds 4 --seed_start 100 \
        --output_dir runs/bench-nested [--branches 4] [--contrast stage2_d1_vs_d2] [--jobs 2]
    python benchmarks/nested_precision.py --from_sweep runs/entities-nested [--contrast ...]

Both designs come out of one branched sweep, run side by side in the same script: branch 0 keeps
the task's own split and reproduces the plain run exactly (tests/test_branching.py), so column b
of the (seed x branch) table is what the old design gives with split b, and each column's cost is
the trunk plus one branch; the nested design's seed value is the mean of the K branches, at the
cost of the trunk plus K branches (CPU seconds from each run's recorded stage wall times). The
variance of the old design's per-seed value is the mean over columns of the variance across
seeds; the nested design's is the variance of seed means. At a budget of B CPU-seconds a design
with cost c per seed affords n = B / c seeds and its interval half-width is t(n-1) * SD / sqrt(n);
the script prints the ratio old / nested (above 1: the nested design is more precise per
CPU-minute) at the budget of ``--budget_seeds`` nested seeds, and the large-sample ratio
sqrt(var_old * c_old / (var_nested * c_nested)).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def _table(
    root: Path, contrast: str
) -> tuple[dict[int, dict[int, float]], dict[int, float], dict[int, dict[int, float]]]:
    """(seed -> branch -> read-out contrast, seed -> trunk seconds, seed -> branch -> own seconds)."""
    values: dict[int, dict[int, float]] = {}
    trunk: dict[int, float] = {}
    own: dict[int, dict[int, float]] = {}
    for path in sorted(root.glob("**/branch*/results.json")):
        results = json.loads(path.read_text())
        seed, branch = results["recipe"]["seed"], results["recipe"]["task"]["branch"]
        last = list(results["stages"])[-1]
        if contrast not in results["stages"][last]["contrasts"]:
            raise SystemExit(
                f"{path}: no contrast {contrast!r} (it has {sorted(results['stages'][last]['contrasts'])})"
            )
        values.setdefault(seed, {})[branch] = results["stages"][last]["contrasts"][contrast]
        entries = results["stages"].values()
        trunk[seed] = sum(e["wall_time_s"] for e in entries if e.get("shared_trunk"))
        own.setdefault(seed, {})[branch] = sum(e["wall_time_s"] for e in entries if not e.get("shared_trunk"))
    if not values:
        raise SystemExit(f"no branch results under {root}")
    return values, trunk, own


def half_width(sd: float, n: float, confidence: float = 0.95) -> float:
    """The t-interval half-width of a mean of ``n`` seeds (``n`` may be fractional: a budget)."""
    return float(stats.t.ppf((1 + confidence) / 2, max(n - 1, 1))) * sd / math.sqrt(n)


def compare(root: Path, contrast: str, budget_seeds: float) -> dict[str, float]:
    values, trunk, own = _table(root, contrast)
    seeds = sorted(values)
    branches = sorted(set.intersection(*(set(v) for v in values.values())))
    x = np.array([[values[s][b] for b in branches] for s in seeds])
    var_old = float(np.mean(x.var(axis=0, ddof=1)))  # one split per seed, any column
    var_nested = float(x.mean(axis=1).var(ddof=1))
    cost_old = float(np.mean([trunk[s] + np.mean([own[s][b] for b in branches]) for s in seeds]))
    cost_nested = float(np.mean([trunk[s] + sum(own[s][b] for b in branches) for s in seeds]))
    budget = budget_seeds * cost_nested
    n_old, n_nested = budget / cost_old, budget / cost_nested
    ratio = half_width(math.sqrt(var_old), n_old) / half_width(math.sqrt(var_nested), n_nested)
    return {
        "seeds": len(seeds),
        "branches": len(branches),
        "sd_old": math.sqrt(var_old),
        "sd_nested": math.sqrt(var_nested),
        "cpu_s_old": cost_old,
        "cpu_s_nested": cost_nested,
        "budget_cpu_min": budget / 60,
        "n_old": n_old,
        "n_nested": n_nested,
        "ratio": ratio,
        "ratio_large_sample": math.sqrt(var_old * cost_old / (var_nested * cost_nested)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", nargs="?", help="a recipe to run as a branched sweep (omit with --from_sweep)")
    parser.add_argument("--from_sweep", help="a finished branched sweep folder to read instead of running one")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--seed_start", type=int, default=100, help="tuning seeds (>= 100) by default")
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--output_dir", default="runs/bench-nested")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--contrast", default="stage2_d1_vs_d2")
    parser.add_argument("--budget_seeds", type=float, default=10, help="the budget: this many nested seeds' CPU time")
    args = parser.parse_args(argv)
    if bool(args.recipe) == bool(args.from_sweep):
        parser.error("give a recipe to run, or --from_sweep FOLDER")
    root = Path(args.from_sweep or args.output_dir)
    if args.recipe:
        from iml_hf import sweep

        code = sweep.main(
            [
                args.recipe,
                "--seeds",
                str(args.seeds),
                "--seed_start",
                str(args.seed_start),
                "--output_dir",
                str(root),
                "--jobs",
                str(args.jobs),
                "--threads",
                "1",
                f"--branches={args.branches}",
            ]
        )
        if code:
            return code
    r = compare(root, args.contrast, args.budget_seeds)
    print(f"{args.contrast} at the read-out, {r['seeds']} seeds x {r['branches']} branches in {root}")
    print(f"  one split per seed: SD {r['sd_old']:.4f} per seed, {r['cpu_s_old'] / 60:.2f} CPU-min per seed")
    print(
        f"  nested, {r['branches']} branches: SD {r['sd_nested']:.4f} per seed, {r['cpu_s_nested'] / 60:.2f} CPU-min per seed"
    )
    print(
        f"  at {r['budget_cpu_min']:.0f} CPU-min ({r['n_old']:.1f} vs {r['n_nested']:.1f} seeds): half-width "
        f"old / nested = {r['ratio']:.2f} (large-sample {r['ratio_large_sample']:.2f}; > 1: nested is more precise)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
