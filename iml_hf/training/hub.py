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

from pathlib import Path
from typing import TYPE_CHECKING, Any

from iml_hf.config.hub_keys import hub_repo_id

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from iml_hf.config import Recipe

#: Run-folder paths that stay local: the Trainer's checkpoints, the stage weights (they go to branches)
#: and wandb's files (``iml_hf.training.trackers`` puts them in ``<output_dir>/wandb``; they name the host, the
#: user, the e-mail and the command line). ``tensorboard/`` is pushed: the Hub shows it.
LOCAL_ONLY = ("checkpoints/", "stages/", "wandb/")


def push_run(
    out: Path, recipe: Recipe, results: dict[str, Any], example: tuple[str, str] | None = None, api: HfApi | None = None
) -> str:
    """Create (or reuse) the model repo; put each stage folder on its branch (made from the repo's
    initial commit), then the run folder but ``LOCAL_ONLY`` on ``main``. Each upload deletes the
    revision's other files, so a reused repo or branch holds exactly this run. Returns the repo id
    (with the namespace the Hub gave it)."""
    from huggingface_hub import HfApi

    from iml_hf.reporting.model_card import write_model_cards

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
