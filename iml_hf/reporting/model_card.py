"""The model card (README.md) of a run folder: what was trained on which corpus, the exact match per
evaluation set and stage, the task's contrasts with 95% intervals, and how to load the model.

Written by ``iml_hf.training.pipeline.run`` from the results alone (no model, no corpus needed), so the same
card describes the folder on disk and the Hub repo ``iml_hf.training.hub`` pushes it to. Each stage folder
saved for a Hub branch (``stages/<name>/``) gets a short card of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData

from iml_hf.reporting.gate import NOT_INTERPRETABLE, gated_sides, verdict
from iml_hf.reporting.stats import difference_interval, wilson_interval
from iml_hf.tasks import get_task_class
from iml_hf.utils.provenance import LIBRARIES, library_versions  # noqa: F401 (LIBRARIES: the card lists them)

CONFIDENCE = 0.95
TAGS = ("iml_hf", "implicit-meta-learning")


def contrast_interval(
    stage: dict[str, Any], a: str, b: str, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The interval of EM(a) - EM(b) at one stage's end for this single run: Newcombe's hybrid
    score interval over the two sets' examples as independent samples (None without both sets' n)."""
    em, n = stage.get("em", {}), stage.get("n", {})
    if a not in em or b not in em or not n.get(a) or not n.get(b):
        return None
    return difference_interval(round(em[a] * n[a]), n[a], round(em[b] * n[b]), n[b], confidence)


def em_interval(stage: dict[str, Any], name: str, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Wilson score interval of one set's EM at one stage's end (None without its n or EM)."""
    em, n = stage.get("em", {}).get(name), stage.get("n", {}).get(name)
    if em is None or not n:
        return None
    return wilson_interval(round(em * n), n, confidence)


def stage_intervals(
    stage: dict[str, Any], contrasts: dict[str, tuple[str, str]], confidence: float = CONFIDENCE
) -> dict[str, dict[str, list[float] | None]]:
    """``{"em": {set: [low, high]}, "contrasts": {name: [low, high]}}`` at one stage's end of this
    single run (Wilson per set, Newcombe per contrast of two evaluated sets; None where undefined):
    the intervals results.json records and the card's tables show."""

    def pair(bounds: tuple[float, float] | None) -> list[float] | None:
        return None if bounds is None else [float(bounds[0]), float(bounds[1])]

    evaluated = stage.get("em", {})
    return {
        "em": {name: pair(em_interval(stage, name, confidence)) for name in evaluated},
        "contrasts": {
            name: pair(contrast_interval(stage, a, b, confidence))
            for name, (a, b) in contrasts.items()
            if a in evaluated and b in evaluated
        },
    }


def run_gate(
    results: dict[str, Any], stage: dict[str, Any], a: str, b: str, confidence: float = CONFIDENCE
) -> str | None:
    """The interpretability gate (``iml_hf.reporting.gate``) of EM(a) - EM(b) at one stage's end of this single
    run: each side's rise over its declared no-definition level with a score interval over its
    examples (Newcombe against a baseline set, Wilson against a chance value); None where the task
    declares no baseline for a side or a count is missing."""
    task = get_task_class(results["recipe"]["task"]["name"])
    sides = gated_sides(getattr(task, "definition_baselines", {}), a, b)
    if not sides:
        return None
    rises = {}
    for side, baseline in sides.items():
        if isinstance(baseline, str):
            interval = contrast_interval(stage, side, baseline, confidence)
        else:
            n, em = stage.get("n", {}).get(side), stage.get("em", {}).get(side)
            bounds = wilson_interval(round(em * n), n, confidence) if n and em is not None else None
            interval = None if bounds is None else (bounds[0] - float(baseline), bounds[1] - float(baseline))
        if interval is None:
            return None
        rises[side] = {"ci_low": interval[0]}
    return verdict(rises)


def hub_dataset(recipe: dict[str, Any]) -> str | None:
    """The Hub dataset the run read its corpus from (None when it built it, or read a local folder)."""
    source = recipe.get("corpus_dataset")
    return source if source and not Path(source).is_dir() else None


def card_data(results: dict[str, Any]) -> ModelCardData:
    """The card's YAML metadata: library, tags (with the task's name), the Hub corpus and base model."""
    recipe = results["recipe"]
    dataset = hub_dataset(recipe)
    base = (recipe.get("model") or {}).get("model_name_or_path")
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=[*TAGS, recipe["task"]["name"]],
        datasets=[dataset] if dataset else None,
        base_model=base if base and not Path(base).exists() else None,
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def em_table(results: dict[str, Any]) -> str:
    """Exact match per evaluation set (rows, with its number of examples) at each stage's end (columns)."""
    stages = results["stages"]
    sets = list(dict.fromkeys(name for stage in stages.values() for name in stage["em"]))
    last = list(stages.values())[-1]
    rows = [
        [
            f"`{name}`",
            str(last.get("n", {}).get(name, "?")),
            *(f"{stage['em'][name]:.3f}" if name in stage["em"] else "-" for stage in stages.values()),
        ]
        for name in sets
    ]
    return _table(["set", "n", *stages], rows)


def contrast_table(results: dict[str, Any], confidence: float = CONFIDENCE) -> str:
    """Every contrast the task declares at each stage's end: EM(a) - EM(b) [interval]."""
    stages = results["stages"]
    rows = []
    for name, a, b in results.get("contrast_sets", []):
        cells = []
        for stage in stages.values():
            value = stage.get("contrasts", {}).get(name)
            interval = contrast_interval(stage, a, b, confidence)
            cell = "-" if value is None else f"{value:+.3f}"
            cell = cell if interval is None else f"{cell} [{interval[0]:+.3f}, {interval[1]:+.3f}]"
            if value is not None and run_gate(results, stage, a, b, confidence) == NOT_INTERPRETABLE:
                cell += f" ({NOT_INTERPRETABLE})"
            cells.append(cell)
        if any(cell != "-" for cell in cells):
            rows.append([f"`{name}`", f"`{a}` - `{b}`", *cells])
    return (
        _table(["contrast", "EM(a) - EM(b)", *stages], rows)
        if rows
        else "The task declares no contrast between the evaluated sets."
    )


def _corpus_section(results: dict[str, Any]) -> str:
    recipe, corpus = results["recipe"], results["corpus"]
    source = recipe.get("corpus_dataset")
    if source:
        revision = recipe.get("corpus_revision") or "the default branch"
        origin = f"read from the dataset `{source}` at {revision}"
    else:
        origin = "built by iml_hf from the task arguments in the recipe below"
    rows = ", ".join(f"{split} {count:,}" for split, count in corpus.get("rows", {}).items())
    return "\n".join(
        [
            f"Task `{recipe['task']['name']}`, seed {recipe['seed']}; the corpus was {origin}.",
            "",
            f"- cache key: `{corpus['cache_key']}`",
            f"- fingerprint (sha256 of its rows): `{corpus['fingerprint']}`",
            f"- rows: {rows}",
        ]
    )


def _training_table(results: dict[str, Any]) -> str:
    rows = [
        [
            f"`{name}`",
            str(stage.get("steps", "?")),
            str(stage.get("train_examples", "?")),
            f"{stage['train_loss']:.4f}" if isinstance(stage.get("train_loss"), float) else "-",
            f"{stage.get('wall_time_s', 0):.1f}",
        ]
        for name, stage in results["stages"].items()
    ]
    return _table(["stage", "steps", "training examples", "mean training loss", "seconds"], rows)


def _load_section(repo: str, example: tuple[str, str] | None, stage_branches: list[str]) -> str:
    prompt, answer = example or ("...", "")
    code = [
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
        f'generator = pipeline("text-generation", model="{repo}")',
        f'print(generator({json.dumps(prompt)}, max_new_tokens=8, do_sample=False)[0]["generated_text"])'
        + (f"  # the corpus's answer: {answer}" if answer else ""),
        "```",
    ]
    if stage_branches:
        code += [
            "",
            "The weights at the end of each stage are on the branch named after it: "
            + ", ".join(f"`{s}`" for s in stage_branches)
            + f' (`AutoModelForCausalLM.from_pretrained("{repo}", revision="{stage_branches[0]}")`).',
        ]
    return "\n".join(code)


def _versions_section(results: dict[str, Any]) -> str:
    """The versions the run recorded (``provenance``; the installed ones for a run from before it),
    the commit of iml_hf's checkout, the date and the command."""
    made = results.get("provenance") or {}
    versions = made.get("versions") or library_versions()
    lines = [f"- {name} {version}" for name, version in versions.items()]
    git = made.get("git")
    if git:
        lines.append(f"- iml_hf commit `{git['commit']}`" + (" (with uncommitted changes)" if git.get("dirty") else ""))
    if made.get("date"):
        lines.append(f"- run on {made['date']}")
    if made.get("command"):
        lines.append(f"- command: `{made['command']}`")
    return "\n".join(lines)


def _intro(results: dict[str, Any], title: str) -> str:
    recipe = results["recipe"]
    params = results.get("parameters", {})
    base = (recipe.get("model") or {}).get("model_name_or_path")
    made = f"fine-tuned from `{base}`" if base else f"trained from scratch ({recipe['model'].get('architecture', '?')})"
    stages = " → ".join(f"`{s}`" for s in results["stages"])
    return (
        f"# {title}\n\nA causal language model ({params.get('total', 0):,} parameters, "
        f"{params.get('trainable', 0):,} trainable; tied weights counted once) {made} by "
        f"iml_hf on the implicit meta-learning task `{recipe['task']['name']}`, "
        f"in {len(results['stages'])} stages ({stages}), seed {recipe['seed']}; "
        f"{results.get('wall_time_s', 0):.0f} s of wall time."
    )


def model_card(results: dict[str, Any], repo: str | None = None, example: tuple[str, str] | None = None) -> ModelCard:
    """The card of a run: its metadata, results (EM table, contrasts with intervals), corpus,
    parameters, resolved recipe (YAML), library versions and how to load it from ``repo``
    (a Hub id; None: the run folder)."""
    recipe = json.loads(json.dumps(results["recipe"]))  # plain YAML types
    name = repo or Path(recipe.get("output_dir", "run")).name
    location = repo or recipe.get("output_dir", ".")
    branches = list(results["stages"]) if recipe.get("hub_stage_branches") else []
    percent = f"{CONFIDENCE:.0%}"
    sections = [
        _intro(results, name),
        "## Exact match\n\nThe share of each evaluation set's examples whose greedy answer is exactly "
        "right, at the end of each stage; n is the number of examples in the set.\n\n" + em_table(results),
        f"## Contrasts\n\nEM(a) - EM(b) for every contrast the task declares, at the end of each stage, "
        f"with a {percent} interval for this single run: Newcombe's hybrid score interval (from the two "
        "sets' Wilson intervals), the two sets' examples taken as independent samples. It covers the "
        "finite evaluation sets only, not the variation between seeds (a sweep and `python -m "
        "iml_hf.report` measure that).\n\n" + contrast_table(results),
        "## Training\n\n" + _training_table(results),
        "## Corpus\n\n" + _corpus_section(results),
        "## Recipe\n\nThe resolved recipe: every key of the run, defaults included (results.json holds "
        "it too).\n\n```yaml\n" + yaml.safe_dump(recipe, sort_keys=False).rstrip() + "\n```",
    ]
    if recipe.get("save_model", True):
        sections.append("## How to load\n\n" + _load_section(location, example, branches))
    sections.append("## Framework versions\n\n" + _versions_section(results))
    return ModelCard(f"---\n{card_data(results).to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def stage_card(results: dict[str, Any], stage: str, repo: str | None = None) -> ModelCard:
    """The card of one stage's weights (a Hub branch): which run and stage, and its EM there."""
    one = {**results, "stages": {stage: results["stages"][stage]}}
    main = f"the `main` branch of `{repo}`" if repo else "the run folder's README.md"
    location = repo or f"{results['recipe'].get('output_dir', '.')}/stages/{stage}"
    revision = f', revision="{stage}"' if repo else ""
    body = "\n\n".join(
        [
            f"# {repo or Path(results['recipe'].get('output_dir', 'run')).name}: stage `{stage}`",
            f"The weights at the end of stage `{stage}` (step {results['stages'][stage].get('steps', '?')} of "
            f"that stage) of a run whose final model, results, recipe and full card are on {main}.",
            "## Exact match at the end of this stage\n\n" + em_table(one),
            "## Contrasts at the end of this stage\n\n" + contrast_table(one),
            "## How to load\n\n```python\nfrom transformers import AutoModelForCausalLM\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{location}"{revision})\n```',
        ]
    )
    return ModelCard(f"---\n{card_data(results).to_yaml()}\n---\n\n{body}\n")


def write_model_cards(
    out: Path, results: dict[str, Any], repo: str | None = None, example: tuple[str, str] | None = None
) -> None:
    """Write ``out/README.md`` and the card of every stage folder saved under ``out/stages``."""
    out = Path(out)
    model_card(results, repo, example).save(out / "README.md")
    for stage in results["stages"]:
        if (out / "stages" / stage).is_dir():
            stage_card(results, stage, repo).save(out / "stages" / stage / "README.md")
