"""Wall-time cost of resumable checkpoints on the toy recipe.

    python benchmarks/resume_overhead.py [--recipe recipes/toy.yaml] [--max_steps_scale 0.25] [--pairs 2]

Runs ``python -m iml_hf.train`` (one process, ``torch_threads: 1``) with checkpoints every
``--checkpoint_steps`` steps (default 500, the toolkit's default) and without checkpoints inside
stages (``--checkpoint_steps=0``; the weights at each stage end are still kept), alternating
the two so that machine noise hits both, and prints the ratio of the median wall times
(process start to exit). ``--max_steps_scale`` shortens every stage (0.25: a quarter of its
steps; the full toy run takes about 8 minutes on a 2-core CPU); with checkpoints every 500
steps both the full and the scaled run save one checkpoint per 500 steps.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "toy.yaml"))
    parser.add_argument("--max_steps_scale", type=float, default=0.25)
    parser.add_argument("--checkpoint_steps", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()

    recipe = yaml.safe_load(Path(args.recipe).read_text())
    scaled = [
        f"--stages.{s['name']}.max_steps={max(1, round(s['max_steps'] * args.max_steps_scale))}"
        for s in recipe["stages"]
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    times: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            order = ("with", "without") if pair % 2 == 0 else ("without", "with")
            for kind in order:
                steps = args.checkpoint_steps if kind == "with" else 0
                out = Path(tmp) / f"{kind}{pair}"
                command = [
                    sys.executable,
                    "-m",
                    "iml_hf.train",
                    args.recipe,
                    f"--output_dir={out}",
                    "--torch_threads=1",
                    f"--checkpoint_steps={steps}",
                    *scaled,
                ]
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
                seconds = time.perf_counter() - start
                if done.returncode:
                    sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
                steps_run = sum(s["steps"] for s in json.loads((out / "results.json").read_text())["stages"].values())
                times[kind].append(seconds)
                print(
                    f"pair {pair} {kind:7s} checkpoints (checkpoint_steps={steps}): {seconds:7.1f} s, {steps_run} steps",
                    flush=True,
                )
    ratio = statistics.median(times["with"]) / statistics.median(times["without"])
    print(
        f"median wall time with / without checkpoints: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%), "
        f"stages at {args.max_steps_scale:g} of their steps, {args.pairs} pairs"
    )


if __name__ == "__main__":
    main()
