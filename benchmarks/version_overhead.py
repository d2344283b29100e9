"""Wall time of one recipe under two source trees of iml_hf, run side by side.

    git worktree add /tmp/base <commit>
    python benchmarks/version_overhead.py --baseline /tmp/base [--candidate .] [--recipe recipes/toy.yaml] [--pairs 1]

Each pair starts ``python -m iml_hf.train RECIPE`` from the baseline tree and from the candidate
tree at the same moment (``PYTHONPATH`` selects the tree, one torch thread each, so a 2-core
machine runs both at once and machine noise hits both), each into its own temporary folder, and
prints both wall times (process start to exit), their ratio per pair and the median ratio. Both
runs must end with the same exact-match table: the script checks the two results.json files agree
on every EM and fails otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def start(tree: Path, recipe: str, output_dir: Path) -> tuple[subprocess.Popen, float]:
    """Launch one training process from ``tree`` and return it with its start time."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    command = [
        sys.executable,
        "-m",
        "iml_hf.train",
        str(tree / recipe),
        f"--output_dir={output_dir}",
        "--torch_threads=1",
    ]
    log = (output_dir.parent / f"{output_dir.name}.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tree)
    return process, time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="source tree of the baseline (a git worktree)")
    parser.add_argument("--candidate", type=Path, default=Path("."), help="source tree to compare (default: .)")
    parser.add_argument("--recipe", default="recipes/toy.yaml")
    parser.add_argument("--pairs", type=int, default=1)
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory(prefix="iml_version_overhead_") as tmp:
        for pair in range(args.pairs):
            runs = {}
            for name, tree in (("baseline", args.baseline), ("candidate", args.candidate)):
                out = Path(tmp) / f"{name}{pair}"
                runs[name] = (*start(tree, args.recipe, out), out)
            seconds = {}
            for name, (process, began, out) in runs.items():
                if process.wait() != 0:
                    raise SystemExit(f"{name} run failed; see {out}.log")
                seconds[name] = time.perf_counter() - began
            em = {name: json.loads((out / "results.json").read_text())["stages"] for name, (_, _, out) in runs.items()}
            same = all(em["baseline"][s]["em"] == em["candidate"][s]["em"] for s in em["baseline"])
            ratios.append(seconds["candidate"] / seconds["baseline"])
            print(
                f"pair {pair}: baseline {seconds['baseline']:.1f} s, candidate {seconds['candidate']:.1f} s, "
                f"ratio {ratios[-1]:.3f}, EM tables {'identical' if same else 'DIFFER'}",
                flush=True,
            )
            if not same:
                raise SystemExit("the two trees gave different EM tables")
    print(f"median ratio candidate / baseline over {len(ratios)} pair(s): {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
