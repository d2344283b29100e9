"""Command line entry: ``python -m iml_hf.push_corpus RECIPE.yaml [--repo_id ID] [--revision BRANCH]
[--private | --no-private] [--staging_dir DIR] [--dry_run] [--key=value ...]``.

Builds the recipe's corpus (or reads it from the cache), writes it as parquet in the layout
``datasets.load_dataset`` reads (``data/<split>-00000-of-00001.parquet``) with a dataset card
(``iml_hf.data.corpus_card``), and uploads that folder to a Hub dataset repo: ``--repo_id``, else the
recipe key ``corpus_repo_id``. A recipe then reads it with ``--corpus_dataset=ID``. The repo is
private unless ``--no-private`` (default: the recipe's ``hub_private``); the token comes from
``HF_TOKEN`` or ``huggingface-cli login``. ``--dry_run`` writes the folder and uploads nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from iml_hf.config import RecipeError, parse_recipe

if TYPE_CHECKING:
    from datasets import DatasetDict
    from huggingface_hub import HfApi

    from iml_hf.tasks import Task

PROG = "iml_hf.push_corpus"


def stage_corpus(
    corpus: DatasetDict, task: Task, seed: int, folder: Path, repo_id: str | None = None, revision: str | None = None
) -> Path:
    """Write ``corpus`` into ``folder`` as one parquet file per split plus its dataset card."""
    from iml_hf.data.corpus_card import corpus_card, data_file

    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in corpus.items():
        rows.to_parquet(str(folder / data_file(split)))
    corpus_card(task, seed, corpus, repo_id, revision).save(folder / "README.md")
    return folder


def upload_corpus(api: HfApi, folder: Path, repo_id: str, revision: str | None, message: str) -> str | None:
    """Upload a staged corpus folder to the existing dataset repo, on the branch ``revision``
    (created if missing; None: main); returns the commit id."""
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=folder, repo_type="dataset", revision=revision, commit_message=message
    )
    return getattr(info, "oid", None)


def _new_folder() -> Path:
    """A new temporary folder to stage the corpus in."""
    return Path(tempfile.mkdtemp(prefix="iml_hf-corpus-"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[1], allow_abbrev=False, add_help=False
    )
    parser.add_argument(
        "--repo_id", help="the dataset repo ('name' or 'user/name'); default: the recipe's corpus_repo_id"
    )
    parser.add_argument("--revision", help="the branch to push to (created if missing); default: main")
    parser.add_argument(
        "--private",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make a new repo private (default: the recipe's hub_private, true unless set)",
    )
    parser.add_argument("--staging_dir", help="write the folder here and keep it (it must be empty or new)")
    parser.add_argument("--dry_run", action="store_true", help="write the folder, upload nothing")
    return parser


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """This command's own options; everything else is the recipe and its ``--key=value`` overrides."""
    return _parser().parse_known_args(argv)


def main(argv: list[str] | None = None, api: HfApi | None = None) -> dict[str, str | None]:
    """Parse, build the corpus, stage it and (unless ``--dry_run``) upload it; returns the repo id,
    the commit and the staged folder (None once removed)."""
    from iml_hf.config.hub_keys import repo_id_problem

    argv = sys.argv[1:] if argv is None else argv
    options, rest = parse_args(argv)
    if {"-h", "--help"} & set(rest):  # this command's options, then the recipe keys
        print(_parser().format_help())
    try:
        recipe = parse_recipe(rest, prog=PROG)
        repo_id = options.repo_id or recipe.run.corpus_repo_id
        if not options.dry_run and not repo_id:
            raise RecipeError("no dataset repo to push to: give --repo_id or the recipe key corpus_repo_id")
        problem = repo_id_problem(repo_id) if repo_id else None
        if problem:
            raise RecipeError(
                f"{repo_id!r} (--repo_id / corpus_repo_id) is not a Hub repo id; use 'name' or 'user/name' ({problem})"
            )
        staging = Path(options.staging_dir) if options.staging_dir else None
        if staging is not None and staging.exists() and any(staging.iterdir()):
            raise RecipeError(f"--staging_dir={staging} is not empty; give a new or empty folder")
    except RecipeError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    import datasets
    from huggingface_hub import HfApi

    from iml_hf.data.corpus import corpus_key, load_or_build_corpus

    datasets.disable_progress_bars()
    task, seed = recipe.task, recipe.run.seed
    corpus = load_or_build_corpus(task, seed, recipe.run.cache_dir)
    key = corpus_key(task, seed)
    if options.dry_run:
        folder = stage_corpus(corpus, task, seed, staging or _new_folder(), repo_id, options.revision)
        print(f"staged the corpus {key} in {folder} (dry run: nothing uploaded)")
        return {"repo_id": repo_id, "commit": None, "folder": str(folder)}
    assert repo_id, "checked with the options above: an upload names its repo"
    private = recipe.run.hub_private if options.private is None else options.private
    api = api or HfApi()
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    repo_id = getattr(url, "repo_id", None) or repo_id
    folder = stage_corpus(corpus, task, seed, staging or _new_folder(), repo_id, options.revision)
    try:
        commit = upload_corpus(api, folder, repo_id, options.revision, f"iml_hf corpus {key} (seed {seed})")
    finally:
        if staging is None:
            shutil.rmtree(folder, ignore_errors=True)
    branch = f" (branch {options.revision})" if options.revision else ""
    print(f"pushed the corpus {key} to https://huggingface.co/datasets/{repo_id}{branch}")
    print(
        f"read it in a recipe with --corpus_dataset={repo_id} --corpus_revision={commit or options.revision or 'main'}"
    )
    return {"repo_id": repo_id, "commit": commit, "folder": str(staging) if staging else None}


if __name__ == "__main__":
    main()
