"""Start-up cost of the commands that only read recipes, under two source trees, side by side.

    git worktree add /tmp/base <commit>
    python benchmarks/startup_cost.py --baseline /tmp/base [--candidate .] [--rounds 5]

What a user waits for before anything trains: a command line with a misspelt key (the parser's
error), and a sweep planning its grid (``import iml_hf.sweep`` plus ``iml_hf.load_recipe``). Each
round runs every case once from the baseline tree and once from the candidate tree, alternating
which goes first (``PYTHONPATH`` selects the tree), and the script prints the median wall time of
each and their ratio (baseline / candidate). The misspelt key must give exit code 2 from both trees.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "train, misspelt key (error)": ["-m", "iml_hf.train", "recipes/toy.yaml", "--model.hiden_size=8"],
    "sweep import + load_recipe": [
        "-c",
        "import iml_hf.sweep; from iml_hf import load_recipe; load_recipe('recipes/toy.yaml')",
    ],
}


def timed(tree: Path, arguments: list[str]) -> tuple[float, int]:
    """Seconds from process start to exit, and the exit code, of ``python ARGUMENTS`` run from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *arguments], env=env, cwd=tree, capture_output=True)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a worktree of the baseline commit")
    parser.add_argument("--candidate", type=Path, default=Path("."))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {"baseline": args.baseline, "candidate": args.candidate}
    for case, arguments in CASES.items():
        seconds: dict[str, list[float]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                elapsed, code = timed(trees[name], arguments)
                if "error" in case and code != 2:
                    sys.exit(f"{case}: the {name} tree exited {code}, not 2")
                seconds[name].append(elapsed)
        base, cand = (statistics.median(seconds[name]) for name in trees)
        print(f"{case:<32} baseline {base:6.2f} s  candidate {cand:6.2f} s  ratio {base / cand:5.2f}x")


if __name__ == "__main__":
    main()
