"""A probe of bad inputs and faults against the command lines (not a speed benchmark).

    python benchmarks/hostile_inputs.py [--jobs 2] [--only SUBSTRING]

Every case runs the real command (``iml_hf.train``, ``iml_hf.report``, ``iml_hf.sweep``,
``iml_hf.analyze``) in a subprocess, next to a finished run folder made first, and is classified:

* ``clear error``: the case should fail and it exits non-zero with a message and no traceback;
* ``handled``: the case should succeed (a fault the toolkit repairs) and it does, correctly;
* ``traceback``: a Python traceback reached the user;
* ``silent``: it exited 0 where it should have failed, or succeeded with a wrong result;
* ``data loss``: a folder that held an earlier result is not byte-identical afterwards.

The cases follow the findings of issue 11; the counts go into its closing note.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PY = sys.executable
#: The flag that lets a run replace a finished one, where this version of the toolkit has it.
OVERWRITE = (
    ["--overwrite_output_dir=true"]
    if "overwrite_output_dir"
    in subprocess.run(
        [
            PY,
            "-c",
            "import dataclasses, iml_hf.config.args as a; print([f.name for f in dataclasses.fields(a.RunArguments)])",
        ],
        capture_output=True,
        text=True,
    ).stdout
    else []
)
RECIPE = {
    "output_dir": "OVERRIDE",
    "seed": 0,
    "torch_threads": 1,
    "task": {"name": "modmul", "modulus": 8, "aliases_per_number": 2, "definition_repeats": 2},
    "model": {"architecture": "gpt2", "num_layers": 1, "hidden_size": 16, "num_heads": 2},
    "training": {"per_device_train_batch_size": 16, "learning_rate": 3.0e-3, "logging_steps": 5, "disable_tqdm": True},
    "evaluation": {"eval_steps": 3},
    "stages": [
        {"name": "pretrain", "train_subsets": ["pretrain"], "max_steps": 6},
        {"name": "x1", "train_subsets": ["x1t", "x1f"], "replay": {"pretrain": 0.5}, "max_steps": 4},
        {"name": "x2", "train_subsets": ["x2t", "x2f"], "max_steps": 4},
    ],
}


@dataclass
class Case:
    """One bad input or fault: the command, whether it should fail, and what must stay intact."""

    name: str
    argv: list[str]
    should_fail: bool = True
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path], bool] | None = None  # for cases that should succeed: is the result right?
    interrupt_after: float | None = None  # seconds, then SIGINT
    cwd: str | None = None
    protected: list[str] = field(default_factory=lambda: ["finished"])


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + file.read_bytes())
    return digest.hexdigest()


def train(*args: str) -> list[str]:
    return [PY, "-m", "iml_hf.train", *args]


def write_recipe(root: Path, name: str, recipe: dict | str) -> str:
    path = root / name
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def cases(root: Path) -> list[Case]:
    """The probe's cases; ``root`` holds the recipe, the finished run and the scratch folders."""
    r = str(root / "tiny.yaml")
    fin = ["--output_dir", str(root / "finished")]
    bad_values = {
        "max_steps=abc": "--stages.pretrain.max_steps=abc",
        "learning_rate=fast": "--training.learning_rate=fast",
        "num_layers=two": "--model.num_layers=two",
        "num_heads=0": "--model.num_heads=0",
        "hidden_size=-128": "--model.hidden_size=-128",
        "max_position_embeddings=3": "--model.max_position_embeddings=3",
        "seed=abc": "--seed=abc",
        "batch size 0": "--training.per_device_train_batch_size=0",
        "max_steps=0": "--stages.pretrain.max_steps=0",
        "max_steps=-5": "--stages.pretrain.max_steps=-5",
        "learning_rate=0": "--training.learning_rate=0",
        "num_layers=0": "--model.num_layers=0",
        "save_model=maybe": "--save_model=maybe",
        "misspelled key": "--model.num_layer=2",
        "task.modulus=1": "--task.modulus=1",
        "task.modulus=abc": "--task.modulus=abc",
        "unknown task": "--task.name=nosuchtask",
        "eval_steps=-1": "--evaluation.eval_steps=-1",
        "eval batch 0": "--evaluation.batch_size=0",
        "alignment interval -1": "--gradient_alignment.interval=-1",
        "alignment method": "--gradient_alignment.method=magic",
        "replay share 1.5": "--stages.x1.replay={pretrain: 1.5}",
        "unknown subset": "--stages.x1.train_subsets=[nosuch]",
        "unknown eval set": "--evaluation.subsets=[nosuch]",
        "resume_from_checkpoint": "--training.resume_from_checkpoint=/nonexistent",
        "training.push_to_hub": "--training.push_to_hub=true",
        "dropout=1.5": "--model.dropout=1.5",
        "weight_decay=-1": "--training.weight_decay=-1",
        "warmup_steps=-3": "--training.warmup_steps=-3",
        "architecture=bert": "--model.architecture=bert",
        "missing checkpoint": "--model.model_name_or_path=/nonexistent",
        "torch_threads=0": "--torch_threads=0",
        "layer split": "--layer_analysis.split=val",
        "num_train_epochs=0": "--stages.pretrain.num_train_epochs=0",
        "gradient_accumulation_steps=0": "--training.gradient_accumulation_steps=0",
        "aliases_per_number=0": "--task.aliases_per_number=0",
        "fp16 weights": "--model.dtype=float16",
        "revision without checkpoint": "--model.revision=step1000",
    }
    # each bad value into a fresh folder: a value the toolkit misses trains and exits 0 ("silent")
    out = [
        Case(f"train: {name}", train(r, f"--output_dir={root / 'bad' / str(i)}", flag))
        for i, (name, flag) in enumerate(bad_values.items())
    ]
    stages_mapping = {**RECIPE, "stages": {s["name"]: s for s in RECIPE["stages"]}}
    dotted = {**RECIPE, "stages": [{**RECIPE["stages"][0], "name": "pre.train"}, *RECIPE["stages"][1:]]}
    slashed = {**RECIPE, "stages": [{**RECIPE["stages"][0], "name": "pre/train"}, *RECIPE["stages"][1:]]}
    files = {
        "stages as a mapping": stages_mapping,
        "stage name with '.'": dotted,
        "stage name with '/'": slashed,
        "duplicate YAML keys": "seed: 0\nseed: 1\n" + yaml.safe_dump({k: v for k, v in RECIPE.items() if k != "seed"}),
        "misspelled section": {**{k: v for k, v in RECIPE.items() if k != "model"}, "modle": RECIPE["model"]},
        "recipe not YAML": "task: {name: modmul\n  : [",
        "recipe is a list": "- 1\n- 2\n",
    }
    for name, recipe in files.items():
        out.append(
            Case(
                f"train: {name}",
                train(write_recipe(root, f"{len(out)}.yaml", recipe), f"--output_dir={root / 'bad' / str(len(out))}"),
            )
        )
    out.append(Case("train: recipe file missing", train(str(root / "missing.yaml"), *fin)))
    out.append(Case("train: rerun into a finished run", train(r, *fin)))
    out.append(
        Case("train: max_steps=abc into a finished run", train(r, *fin, *OVERWRITE, "--stages.pretrain.max_steps=abc"))
    )

    project = root / "project"
    out.append(
        Case(
            "train: --output_dir=. in a project folder",
            train(r, "--output_dir=."),
            cwd=str(project),
            protected=["finished", "project"],
        )
    )

    def cache_entries(path: Path) -> list[Path]:
        return sorted((path / "corpora").glob("modmul-*"))

    def truncate_cache(path: Path) -> None:
        for entry in cache_entries(root / "cache"):
            arrow = sorted(entry.rglob("*.arrow"))[0]
            arrow.write_bytes(arrow.read_bytes()[:100])

    def foreign_cache(path: Path) -> None:
        subprocess.run(
            train(r, "--seed=1", f"--output_dir={root / 'seed1'}", f"--cache_dir={root / 'cache'}"),
            capture_output=True,
            check=True,
        )
        from iml_hf.config import parse_recipe
        from iml_hf.data.corpus import corpus_key

        task = parse_recipe([r]).task
        ours, theirs = (root / "cache" / "corpora" / corpus_key(task, seed) for seed in (0, 1))
        for a, b in zip(sorted(ours.rglob("*.arrow")), sorted(theirs.rglob("*.arrow"))):
            shutil.copyfile(b, a)

    truth = json.loads((root / "finished" / "results.json").read_text())["corpus"]["fingerprint"]

    def same_corpus(name: str) -> Callable[[Path], bool]:
        return lambda path: json.loads((root / name / "results.json").read_text())["corpus"]["fingerprint"] == truth

    cache = f"--cache_dir={root / 'cache'}"
    out.append(
        Case(
            "train: truncated corpus cache",
            train(r, f"--output_dir={root / 'c1'}", cache),
            should_fail=False,
            setup=truncate_cache,
            check=same_corpus("c1"),
        )
    )
    out.append(
        Case(
            "train: another seed's corpus files in the cache",
            train(r, f"--output_dir={root / 'c2'}", cache),
            should_fail=False,
            setup=foreign_cache,
            check=same_corpus("c2"),
        )
    )
    out.append(
        Case(
            "train: Ctrl-C while replacing a finished run",
            train(r, *fin, *OVERWRITE, "--stages.pretrain.max_steps=3000"),
            interrupt_after=25.0,
        )
    )

    runs = root / "runs"
    report = [PY, "-m", "iml_hf.report"]
    out += [
        Case(
            "report: one corrupt results.json",
            report + [str(runs / "corrupt")],
            should_fail=False,
            check=lambda p: True,
            protected=["finished"],
        ),
        Case(
            "report: truncated metrics.jsonl",
            report + [str(runs / "truncated")],
            should_fail=False,
            check=lambda p: True,
        ),
        Case("report: {} as results.json", report + [str(runs / "empty")], should_fail=False, check=lambda p: True),
        Case("report: two copies of one run", report + [str(runs / "duplicate")]),
        Case("report: folder does not exist", report + [str(root / "nowhere")]),
        Case("report: empty folder", report + [str(root / "emptydir")]),
    ]
    sweep = [PY, "-m", "iml_hf.sweep", r, "--seeds", "1"]
    out += [
        Case("sweep: --jobs 0", sweep + ["--jobs", "0", "--output_dir", str(root / "s0")]),
        Case("sweep: corrupt sweep.json", sweep + ["--output_dir", str(root / "badsweep")], protected=["badsweep"]),
        Case("sweep: --seeds 0", [PY, "-m", "iml_hf.sweep", r, "--seeds", "0", "--output_dir", str(root / "s1")]),
        Case("sweep: unknown --set key", sweep + ["--output_dir", str(root / "s2"), "--set", "model.num_layer=1,2"]),
        Case(
            "sweep: Ctrl-C",
            [
                PY,
                "-m",
                "iml_hf.sweep",
                r,
                "--seeds",
                "3",
                "--output_dir",
                str(root / "s3"),
                "--stages.pretrain.max_steps=3000",
            ],
            interrupt_after=25.0,
        ),
    ]
    analyze = [PY, "-m", "iml_hf.analyze", "layers"]
    text = str(root / "text.txt")
    out += [
        Case(
            "analyze: toy model, text file, default --seq_len",
            analyze
            + [
                "--model",
                str(root / "finished"),
                "--data",
                text,
                "--output_dir",
                str(root / "a1"),
                "--max_tokens",
                "200",
                "--linear_model_tokens",
                "0",
            ],
            should_fail=False,
            check=lambda p: (root / "a1" / "layers.json").exists(),
        ),
        Case(
            "analyze: a folder that is no model",
            analyze + ["--model", str(root / "emptydir"), "--data", text, "--output_dir", str(root / "a2")],
        ),
        Case(
            "analyze: missing data",
            analyze
            + ["--model", str(root / "finished"), "--data", str(root / "nope"), "--output_dir", str(root / "a3")],
        ),
        Case(
            "analyze: --seq_len 0",
            analyze
            + ["--model", str(root / "finished"), "--data", text, "--seq_len", "0", "--output_dir", str(root / "a4")],
        ),
        Case(
            "analyze: --max_tokens 0",
            analyze
            + [
                "--model",
                str(root / "finished"),
                "--data",
                text,
                "--max_tokens",
                "0",
                "--output_dir",
                str(root / "a5"),
            ],
        ),
        Case(
            "analyze: --seq_len beyond the model",
            analyze
            + ["--model", str(root / "finished"), "--data", text, "--seq_len", "500", "--output_dir", str(root / "a6")],
        ),
    ]
    return out


def prepare(root: Path) -> None:
    """The tiny recipe, a finished run, a project folder, report fixtures, a corrupt sweep manifest."""
    recipe = {**RECIPE, "output_dir": str(root / "finished")}
    write_recipe(root, "tiny.yaml", recipe)
    subprocess.run(train(str(root / "tiny.yaml"), f"--cache_dir={root / 'cache'}"), check=True, capture_output=True)
    project = root / "project"
    for sub in ("layers", "embeddings"):
        (project / sub).mkdir(parents=True)
        (project / sub / "keep.txt").write_text("an earlier analysis")
    (project / "README.md").write_text("my project")
    (root / "emptydir").mkdir()
    (root / "text.txt").write_text(" ".join(["3 4 = 4", "5 6 = 6", "1 2 = 2"] * 200))
    runs = root / "runs"
    good = root / "finished"
    for name, damage in {"corrupt": "{not json", "truncated": None, "empty": "{}", "duplicate": None}.items():
        shutil.copytree(good, runs / name / "seed0")
        shutil.copytree(good, runs / name / "seed1")
        results = json.loads((good / "results.json").read_text())
        results["recipe"]["seed"] = 1
        (runs / name / "seed1" / "results.json").write_text(json.dumps(results))
        if damage is not None:
            (runs / name / "seed1" / "results.json").write_text(damage)
    metrics = runs / "truncated" / "seed1" / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:-40])
    shutil.copytree(good, runs / "duplicate" / "copy")
    (root / "badsweep").mkdir()
    (root / "badsweep" / "sweep.json").write_text("{ this is not json")


def run_case(case: Case, root: Path) -> tuple[str, str]:
    before = {name: tree_hash(root / name) for name in case.protected}
    if case.setup:
        case.setup(root)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IML_HF_CACHE": str(root / "cache"), "WANDB_MODE": "offline"}
    process = subprocess.Popen(
        case.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=case.cwd or str(root), env=env
    )
    if case.interrupt_after is not None:
        time.sleep(case.interrupt_after)
        process.send_signal(signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    after = {name: tree_hash(root / name) for name in case.protected}
    last = (stderr.strip().splitlines() or stdout.strip().splitlines() or [""])[-1][:160]
    if before != after:
        return "data loss", last
    if "Traceback (most recent call last)" in stderr:
        return "traceback", last
    if case.should_fail:
        return ("clear error" if process.returncode != 0 else "silent"), last
    if process.returncode != 0:
        return "clear error", last
    return ("handled" if case.check is None or case.check(root) else "silent"), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="iml-hostile-"))
    prepare(root)
    selected = [c for c in cases(root) if args.only in c.name]
    serial = [c for c in selected if c.setup or c.interrupt_after or c.cwd or "cache" in " ".join(c.argv)]
    parallel = [c for c in selected if c not in serial]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = dict(zip((c.name for c in parallel), pool.map(lambda c: run_case(c, root), parallel)))
    outcomes.update({c.name: run_case(c, root) for c in serial})
    for case in selected:
        kind, last = outcomes[case.name]
        print(f"{kind:12s} {case.name:55s} {last}")
    counts = Counter(kind for kind, _ in outcomes.values())
    print(
        f"\n{len(selected)} cases in {time.perf_counter() - started:.0f} s: "
        + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("clear error", "handled", "traceback", "silent", "data loss"))
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
