"""The Python API: load a recipe, build its corpus, run it, sweep it and report on it, from a notebook.

    import iml_hf
    recipe = iml_hf.load_recipe("recipes/toy.yaml", seed=3, **{"stages.x1.max_steps": 100})
    results = iml_hf.run(recipe)

Errors are exceptions (``iml_hf.RecipeError`` for a recipe or argument that cannot work, ``ValueError``
for a folder the report cannot read), never ``SystemExit``: only the command lines turn them into
exit codes. Quiet unless asked (``verbose=True``). docs/api.md has a worked example.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iml_hf.config import Recipe, RecipeError, load_yaml_origins, recipe_from
from iml_hf.config.keys import SECTIONS
from iml_hf.config.run_names import format_value

if TYPE_CHECKING:
    from datasets import DatasetDict


def dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides as dotted keys: ``{"model.num_layers": 2}`` as it is; a section's mapping
    ``{"model": {"num_layers": 2}}`` as ``{"model.num_layers": 2}``; ``{"stages": {"x1": {"max_steps": 9}}}``
    as ``{"stages.x1.max_steps": 9}``. Values stay as given (``stages.x1.replay`` takes a mapping)."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "stages" and isinstance(value, Mapping):
            for stage, keys in value.items():
                if not isinstance(keys, Mapping):
                    raise RecipeError(
                        f"stages={{{stage!r}: {keys!r}}}: give each stage's keys as a mapping, "
                        f"e.g. stages={{'{stage}': {{'max_steps': 100}}}}"
                    )
                flat.update({f"stages.{stage}.{k}": v for k, v in keys.items()})
        elif key in SECTIONS and isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def load_recipe(recipe: str | os.PathLike | Mapping[str, Any], /, **overrides: Any) -> Recipe:
    """A validated Recipe from a recipe file or mapping, with ``overrides`` on top (dotted keys such as
    ``**{"stages.x1.max_steps": 100}``, top-level keys such as ``seed=3``, or a section's mapping such as
    ``model={"num_layers": 2}``); the precedence is the command line's: default < recipe < overrides.
    A bad key or value raises RecipeError naming it (and the file line it came from). Reading a recipe
    imports neither torch nor transformers, so the stages' TrainingArguments, whose own checks depend on
    the machine, are checked when the recipe runs, or now by ``recipe.check_training_arguments()``."""
    origins: dict[str, str] = {}
    if isinstance(recipe, Mapping):
        nested, source = dict(recipe), None
    elif isinstance(recipe, (str, os.PathLike)):
        source = os.fspath(recipe)
        nested, origins = load_yaml_origins(source)
    else:
        raise TypeError(f"load_recipe takes a recipe file or a mapping, not {type(recipe).__name__}")
    return recipe_from(nested, dotted(overrides), source, origins)


def _recipe(recipe: str | os.PathLike | Mapping[str, Any] | Recipe) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def build_corpus(recipe: str | os.PathLike | Mapping[str, Any] | Recipe, verbose: bool = False) -> DatasetDict:
    """The recipe's corpus (splits ``train`` and ``test``, the columns of ``iml_hf.tasks.CORPUS_COLUMNS``):
    read from ``corpus_dataset`` when the recipe names one, else built (or read from the cache)."""
    from iml_hf.data.corpus import load_corpus_dataset, load_or_build_corpus

    recipe = _recipe(recipe)
    run = recipe.run
    with _console(verbose):
        if run.corpus_dataset:
            return load_corpus_dataset(run.corpus_dataset, recipe.task, run.seed, run.corpus_revision, run.cache_dir)
        return load_or_build_corpus(recipe.task, run.seed, run.cache_dir)


@contextlib.contextmanager
def _console(verbose: bool) -> Iterator[None]:
    """The run's console shown (``verbose``) or silenced (iml_hf.utils.console), as it was afterwards."""
    from iml_hf.utils.console import is_verbose, library_output, set_verbosity

    before = is_verbose()
    set_verbosity(verbose)
    try:
        with library_output():
            yield
    finally:
        set_verbosity(before)


def run(recipe: str | os.PathLike | Mapping[str, Any] | Recipe, verbose: bool = False) -> dict[str, Any]:
    """Train every stage of the recipe and return its results (what ``results.json`` holds); a branched
    recipe (``branches: K``) returns ``{"trunk": results, "branches": {b: results}}``. A killed run resumes
    when called again with the same recipe, as the command line does."""
    recipe = _recipe(recipe)
    from iml_hf.training.pipeline import run as run_pipeline

    with _console(verbose):
        if recipe.run.branches:
            from iml_hf.training.branching import run_branched

            return run_branched(recipe)
        return run_pipeline(recipe)


def run_sweep(
    recipe: str | os.PathLike,
    *,
    seeds: int,
    output_dir: str | os.PathLike,
    seed_start: int = 0,
    sets: Mapping[str, list[Any]] | None = None,
    overrides: Mapping[str, Any] | None = None,
    jobs: int | None = None,
    threads: int | None = None,
    launcher: str = "local",
    slurm: Mapping[str, Any] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run ``recipe`` over ``seeds`` seeds (times every combination of ``sets``: ``{"task.modulus": [40, 80]}``),
    each run in its own process, as ``python -m iml_hf.sweep`` does; returns the manifest (``sweep.json``:
    every run with its status, exit code and wall time). A bad argument or recipe raises RecipeError before
    anything runs; a failed run does not raise (its status is ``failed``); an interrupted sweep raises
    KeyboardInterrupt. Called again with the same arguments, it resumes."""
    from iml_hf import sweep as sweep_cli
    from iml_hf.sweeping.grid import parse_set, plan

    argv = [
        os.fspath(recipe),
        "--seeds",
        str(seeds),
        "--seed_start",
        str(seed_start),
        "--output_dir",
        os.fspath(output_dir),
        "--launcher",
        launcher,
    ]
    argv += [f"--set={key}=" + ",".join(format_value(v) for v in values) for key, values in (sets or {}).items()]
    argv += ["--jobs", str(jobs)] if jobs is not None else []
    argv += ["--threads", str(threads)] if threads is not None else []
    argv += [f"--slurm={key}={value}" for key, value in (slurm or {}).items()]
    argv += [f"--{key}={format_value(value)}" for key, value in dotted(overrides or {}).items()]
    args, extra = sweep_cli.build_parser().parse_known_args(argv)
    sweep_cli.check_arguments(args, extra)  # RecipeError, before anything is written
    grid = dict(parse_set(s) for s in args.sets)
    seed_list = list(range(seed_start, seed_start + seeds))
    plan(
        args.recipe, args.output_dir, seed_list, grid, extra, 1, check_training=launcher == "local"
    )  # every run parses
    out = io.StringIO()
    with (
        contextlib.redirect_stdout(out) if not verbose else contextlib.nullcontext(),
        contextlib.redirect_stderr(out) if not verbose else contextlib.nullcontext(),
    ):
        code = sweep_cli.main(argv)
    if code in (130, 143):
        raise KeyboardInterrupt(f"the sweep was interrupted; call run_sweep again to resume ({output_dir})")
    manifest = Path(output_dir) / "sweep.json"
    if code == 2 or not manifest.exists():
        raise RecipeError(f"the sweep did not start: {out.getvalue().strip() or f'exit code {code}'}")
    return json.loads(manifest.read_text())


def build_report(folder: str | os.PathLike, confidence: float = 0.95) -> dict[str, Any]:
    """Aggregate a folder of runs (a sweep's, or any) into ``summary.json``, ``summary.md``, the figures
    and ``report.md`` in that folder, as ``python -m iml_hf.report`` does; returns the summary. A folder
    without finished runs, or with two copies of one run, raises ValueError."""
    root = Path(folder)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1 (e.g. 0.95)")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of runs")
    from iml_hf.report import build_report as report_folder

    return report_folder(root, confidence=confidence)
