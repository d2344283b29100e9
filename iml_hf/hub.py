"""A finished run as a Hub model repo: ``main`` holds the run folder (final model, tokenizer,
results.json, metrics.jsonl, TensorBoard events, the card) and, with ``hub_stage_branches``, each
stage's weights sit on a branch named after the stage. Every push replaces the revision's files, so
the repo holds exactly this run (the default repo id is the tracker run name, ``<recipe stem>-seed<S>``).

The push happens once, from the main process, after results.json and the card exist, through
``huggingface_hub.HfApi``; the token comes from ``HF_TOKEN`` or ``huggingface-cli login`` only, never
from a recipe. The Trainer's own Hub push (``training.push_to_hub`` and its ``hub_*`` keys) would
push each stage's folder before any result exists, so recipes may not use it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from iml_hf.args import RunArguments, StageArguments
    from iml_hf.recipe import Recipe

#: Run-folder paths that stay local: the Trainer's checkpoints, the stage weights (they go to branches)
#: and wandb's files (``iml_hf.trackers`` puts them in ``<output_dir>/wandb``; they name the host, the
#: user, the e-mail and the command line). ``tensorboard/`` is pushed: the Hub shows it.
LOCAL_ONLY = ("checkpoints/", "stages/", "wandb/")
#: TrainingArguments fields of the Trainer's own push, and the top-level key that replaces each.
TRAINER_HUB_KEYS = {
    "push_to_hub": "push_to_hub",
    "hub_model_id": "hub_model_id",
    "hub_private_repo": "hub_private",
    "hub_strategy": "hub_stage_branches",
    "hub_token": None,
    "hub_always_push": None,
    "hub_revision": None,
}
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def repo_id_problem(value: str) -> str | None:
    """Why ``value`` is no Hub repo id (``huggingface_hub``'s own check), or None if it is one."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as error:
        return str(error)
    return None


def hub_repo_id(recipe: Recipe) -> str:
    """``hub_model_id``, or the tracker run name (``iml_hf.trackers.run_name``: ``<recipe stem>-seed<S>``
    unless ``training.run_name`` says otherwise); the Hub puts a bare name under the token's user."""
    from iml_hf.trackers import run_name

    return recipe.run.hub_model_id or run_name(recipe)


def _trainer_hub_error(where: str, key: str) -> str:
    replacement = TRAINER_HUB_KEYS[key]
    instead = (
        f"use the top-level key '{replacement}' instead"
        if replacement
        else "the token comes from HF_TOKEN or `huggingface-cli login`"
        if key == "hub_token"
        else "iml_hf pushes the whole run once, after results.json exists (top-level push_to_hub)"
    )
    return f"{where}.{key} would make each stage's Trainer push its own folder before any result exists; {instead}"


def check_hub_keys(run: RunArguments, training: dict[str, Any], stages: list[StageArguments]) -> None:
    """Refuse the Trainer's own Hub keys and inconsistent top-level Hub keys (a ValueError naming the key)."""
    for where, values in [("training", training), *((f"stages.{s.name}", s.training) for s in stages)]:
        for key in values:
            if key in TRAINER_HUB_KEYS:
                raise ValueError(_trainer_hub_error(where, key))
    for key in ("hub_model_id", "corpus_repo_id"):
        value = getattr(run, key)
        problem = None if value is None else repo_id_problem(value)
        if problem:
            raise ValueError(
                f"{key}={value!r} is not a Hub repo id; use 'name' or 'user/name' "
                f"(letters, digits, '-', '_', '.'; {problem})"
            )
    if run.push_to_hub and not run.save_model:
        raise ValueError("push_to_hub=true needs save_model=true: the pushed repo would hold no model")
    if run.hub_stage_branches and not run.push_to_hub:
        raise ValueError("hub_stage_branches=true only says how to push; it needs push_to_hub=true")
    if run.hub_stage_branches:
        for stage in stages:
            if stage.name == "main" or not _BRANCH.match(stage.name):
                raise ValueError(
                    f"hub_stage_branches=true: stage name {stage.name!r} cannot be a branch name; "
                    "use letters, digits, '-', '_', '.' and not 'main'"
                )
    if run.corpus_revision is not None and run.corpus_dataset is None:
        raise ValueError("corpus_revision is set but corpus_dataset is not; name the dataset to read the corpus from")


def check_hub_repo_id(recipe: Recipe) -> None:
    """With ``push_to_hub``, the repo id the run pushes to must be one (a ValueError naming the key)."""
    if recipe.run.push_to_hub and not recipe.run.hub_model_id:
        problem = repo_id_problem(hub_repo_id(recipe))
        if problem:
            raise ValueError(
                f"push_to_hub=true: the default repo id, the run name {hub_repo_id(recipe)!r} "
                f"(training.run_name or <recipe stem>-seed<seed>), is no Hub repo id ({problem}); "
                "set hub_model_id"
            )


def push_run(
    out: Path, recipe: Recipe, results: dict[str, Any], example: tuple[str, str] | None = None, api: HfApi | None = None
) -> str:
    """Create (or reuse) the model repo; put each stage folder on its branch (made from the repo's
    initial commit), then the run folder but ``LOCAL_ONLY`` on ``main``. Each upload deletes the
    revision's other files, so a reused repo or branch holds exactly this run. Returns the repo id
    (with the namespace the Hub gave it)."""
    from huggingface_hub import HfApi

    from iml_hf.model_card import write_model_cards

    api = api or HfApi()
    out = Path(out)
    asked = hub_repo_id(recipe)
    url = api.create_repo(asked, private=recipe.run.hub_private, exist_ok=True, repo_type="model")
    repo_id = getattr(url, "repo_id", None) or asked
    if repo_id != asked:  # the Hub added the user's namespace: the cards' loading code must name it
        write_model_cards(out, results, repo_id, example)
    run = f"iml_hf run {out.name} ({results['corpus']['cache_key']}, seed {recipe.run.seed})"
    if recipe.run.hub_stage_branches:  # before main gets this run's files: a branch holds its stage's only
        initial = api.list_repo_commits(repo_id, repo_type="model")[-1].commit_id  # newest first
        for stage in recipe.stages:
            api.create_branch(repo_id, branch=stage.name, revision=initial, repo_type="model", exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=out / "stages" / stage.name,
                repo_type="model",
                revision=stage.name,
                delete_patterns="*",
                commit_message=f"{run}: weights at the end of stage {stage.name}",
            )
    # upload_folder extends a list of ignore patterns in place: give it its own
    api.upload_folder(
        repo_id=repo_id,
        folder_path=out,
        repo_type="model",
        ignore_patterns=list(LOCAL_ONLY),
        delete_patterns="*",
        commit_message=run,
    )
    return repo_id
