"""Publishing a corpus and reading it back: the pushed files load with ``load_dataset`` into the
generated corpus, the card describes it, and a run that reads it equals one that generated it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import run_recipe
from datasets import load_dataset
from hub_fake import install
from huggingface_hub import DatasetCard
from test_cvdb import ROWS, write_cvdb

from iml_hf import push_corpus
from iml_hf.config import parse_recipe
from iml_hf.data.corpus import corpus_fingerprint, corpus_metadata, load_corpus_dataset, load_or_build_corpus
from iml_hf.data.corpus_card import COLUMN_DESCRIPTIONS, subset_description
from iml_hf.tasks import CORPUS_COLUMNS, task_registry
from iml_hf.tasks.entities import EntitiesTask


def _staged(tiny_recipe, tmp_path):
    """The tiny recipe's corpus staged by ``push_corpus --dry_run`` into a folder of its own."""
    folder = tmp_path / "staged"
    push_corpus.main([str(tiny_recipe), "--dry_run", f"--staging_dir={folder}"])
    return folder


def test_pushed_corpus_loads_back_as_the_generated_one(monkeypatch, tiny_recipe, tmp_path, capsys):
    hub = install(monkeypatch, tmp_path / "hub")
    push_corpus.main([str(tiny_recipe), "--repo_id", "me/iml-toy", "--revision", "v1"])
    assert [name for name, _ in hub.calls] == ["create_repo", "create_branch", "upload_folder"]
    created, upload = hub.uploaded("create_repo")[0], hub.uploaded()[0]
    assert created["repo_type"] == "dataset" and created["private"] is True and created["exist_ok"] is True
    assert upload["revision"] == "v1" and upload["repo_type"] == "dataset"

    folder = hub.folder("me/iml-toy", "v1", "dataset")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    recipe = parse_recipe([str(tiny_recipe)])
    generated = load_or_build_corpus(recipe.task, 0)
    loaded = load_dataset(str(folder), cache_dir=str(tmp_path / "datasets"))
    assert list(loaded) == ["train", "test"] and loaded["train"].column_names == list(CORPUS_COLUMNS)
    assert corpus_fingerprint(loaded) == corpus_fingerprint(generated)

    card = DatasetCard.load(folder / "README.md")
    assert card.data.configs == [
        {
            "config_name": "default",
            "data_files": [
                {"split": "train", "path": "data/train-00000-of-00001.parquet"},
                {"split": "test", "path": "data/test-00000-of-00001.parquet"},
            ],
        }
    ]
    assert [f["name"] for f in card.data.dataset_info["features"]] == list(CORPUS_COLUMNS)
    assert card.data.iml_hf == corpus_metadata(recipe.task, 0, generated)
    assert card.data.tags == ["iml_hf", "implicit-meta-learning", "modmul"]
    for subset in recipe.task.subsets:
        assert f"| `{subset}` |" in card.text and subset_description(recipe.task, subset) in card.text
    for column in CORPUS_COLUMNS:
        assert f"| `{column}` | string | {COLUMN_DESCRIPTIONS[column]} |" in card.text
    assert "modulus: 8" in card.text and card.data.iml_hf["fingerprint"] in card.text
    assert 'load_dataset("me/iml-toy", revision="v1")' in card.text

    # the command says how to read exactly this commit back
    assert re.search(r"--corpus_dataset=me/iml-toy --corpus_revision=[0-9a-f]{40}\n", capsys.readouterr().out)


def test_repo_from_the_recipe_and_a_public_repo_on_request(monkeypatch, tiny_recipe, tmp_path):
    hub = install(monkeypatch, tmp_path / "hub")
    push_corpus.main([str(tiny_recipe), "--corpus_repo_id=iml-toy", "--no-private"])
    created = hub.uploaded("create_repo")[0]
    assert created["repo_id"] == "iml-toy" and created["private"] is False
    assert hub.uploaded()[0]["repo_id"] == "me/iml-toy" and hub.uploaded()[0]["revision"] is None
    card = (hub.folder("me/iml-toy", repo_type="dataset") / "README.md").read_text()
    assert 'load_dataset("me/iml-toy")' in card  # the namespace the Hub gave


def test_push_corpus_without_a_repo_is_an_error(monkeypatch, tiny_recipe, tmp_path, capsys):
    install(monkeypatch, tmp_path / "hub")
    with pytest.raises(SystemExit) as code:
        push_corpus.main([str(tiny_recipe)])
    assert code.value.code == 2 and "give --repo_id or the recipe key corpus_repo_id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        push_corpus.main([str(tiny_recipe), "--repo_id=me/x", "--task.modulos=8"])
    assert "did you mean '--task.modulus'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as code:  # the Hub's own rules: no '--' or '..', no '-' or '.' at either end
        push_corpus.main([str(tiny_recipe), "--repo_id=me/a--b"])
    assert (
        code.value.code == 2
        and "'me/a--b' (--repo_id / corpus_repo_id) is not a Hub repo id" in capsys.readouterr().err
    )


def test_every_builtin_subset_and_column_is_described():
    assert set(COLUMN_DESCRIPTIONS) == set(CORPUS_COLUMNS)
    for name, cls in task_registry().items():
        described = {s: m.description for s, m in cls.subset_meanings.items()}
        assert set(described) == set(cls.subsets), name


def test_a_run_on_the_pushed_corpus_equals_a_run_that_generated_it(monkeypatch, tiny_recipe, tmp_path):
    hub = install(monkeypatch, tmp_path / "hub")
    push_corpus.main([str(tiny_recipe), "--repo_id", "me/iml-toy"])
    folder = hub.folder("me/iml-toy", repo_type="dataset")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    generated, _ = run_recipe(monkeypatch, tmp_path / "a")
    read, _ = run_recipe(monkeypatch, tmp_path / "b", corpus_dataset=str(folder))
    assert read["corpus"] == generated["corpus"]  # fingerprint, cache key, rows
    for key in ("final_em", "contrasts"):
        assert read[key] == generated[key]
    for stage in generated["stages"]:
        for key in ("em", "n", "metrics", "contrasts", "steps", "train_loss"):
            assert read["stages"][stage][key] == generated["stages"][stage][key], (stage, key)
    card = (tmp_path / "b" / "run" / "README.md").read_text()
    assert f"read from the dataset `{folder}`" in card and "datasets:" not in card.split("---")[1]


def test_a_corpus_of_other_arguments_seed_or_rows_is_refused(tiny_recipe, tmp_path):
    folder = _staged(tiny_recipe, tmp_path)
    task = parse_recipe([str(tiny_recipe)]).task
    cache = tmp_path / "cache"
    assert corpus_fingerprint(load_corpus_dataset(str(folder), task, 0, cache_dir=cache)) == corpus_fingerprint(
        task.build(0)
    )

    other = parse_recipe([str(tiny_recipe), "--task.modulus=12", "--task.definition_repeats=3"]).task
    with pytest.raises(
        ValueError, match=r"task.definition_repeats: dataset 2, recipe 3, task.modulus: dataset 8, recipe 12"
    ):
        load_corpus_dataset(str(folder), other, 0, cache_dir=cache)
    with pytest.raises(ValueError, match="was built with seed 0, but the recipe's seed is 1"):
        load_corpus_dataset(str(folder), task, 1, cache_dir=cache)

    train = folder / "data" / "train-00000-of-00001.parquet"
    rows = pd.read_parquet(train)
    rows.loc[0, "answer"] = "999"
    rows.to_parquet(train)
    with pytest.raises(ValueError, match="do not match the fingerprint in the dataset card"):
        load_corpus_dataset(str(folder), task, 0, cache_dir=tmp_path / "cache2")

    (folder / "README.md").unlink()  # a hand-made dataset without a card is checked by its schema alone
    rows.drop(columns=["referent"]).to_parquet(train)
    with pytest.raises(ValueError, match=f"corpus_dataset='{folder}' cannot be read: .*column names don't match"):
        load_corpus_dataset(str(folder), task, 0, cache_dir=tmp_path / "cache3")
    test = folder / "data" / "test-00000-of-00001.parquet"
    pd.read_parquet(test).drop(columns=["referent"]).to_parquet(test)
    with pytest.raises(ValueError, match="is not a corpus of this task: .* has columns"):
        load_corpus_dataset(str(folder), task, 0, cache_dir=tmp_path / "cache4")


def test_a_missing_corpus_dataset_names_the_key(tiny_recipe, tmp_path, monkeypatch):
    install(monkeypatch, tmp_path / "hub")  # offline: nothing is downloaded
    task = parse_recipe([str(tiny_recipe)]).task
    with pytest.raises(ValueError, match=r"corpus_dataset='me/no-such-corpus' at revision 'v9' cannot be read"):
        load_corpus_dataset("me/no-such-corpus", task, 0, revision="v9", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"corpus_dataset='corpora/no/such' is no local folder and no Hub dataset id"):
        load_corpus_dataset("corpora/no/such", task, 0, cache_dir=tmp_path / "cache")


def place_dataset_in_hub_cache(cache, repo, folder, commit, branch="main", missing=()):
    """``datasets--org--name`` as ``snapshot_download`` leaves it: content-addressed blobs, the
    snapshot's files as relative symlinks to them, the branch's ref, and the commit's tree listing
    (``trees/<commit>.json``) naming every file of ``folder``; the files in ``missing`` are listed
    but not cached (an interrupted download)."""
    root = cache / f"datasets--{repo.replace('/', '--')}"
    listing = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative, data = file.relative_to(folder).as_posix(), file.read_bytes()
        listing[relative] = {"size": len(data), "blob_id": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
        if relative in missing:
            continue
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / commit / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / branch).write_text(commit)
    (root / "trees").mkdir(exist_ok=True)
    (root / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))


def test_a_hub_corpus_loads_offline_from_the_hub_cache_and_is_checked(tiny_recipe, tmp_path):
    """In a fresh process with HF_HUB_OFFLINE=1 (read at import): a Hub dataset id in the cache loads,
    data and card from one snapshot, and the card's checks run; a card the snapshot lists but the
    cache lacks is an error, not a skipped check."""
    folder = _staged(tiny_recipe, tmp_path)
    cache = tmp_path / "hf-cache"
    commit, other = "a" * 40, "b" * 40
    place_dataset_in_hub_cache(cache, "me/iml-toy", folder, commit, branch="v1")
    place_dataset_in_hub_cache(cache, "me/iml-toy-partial", folder, other, missing={"README.md"})
    script = f"""
from iml_hf.data.corpus import corpus_fingerprint, load_corpus_dataset
from iml_hf.config import parse_recipe

task = parse_recipe([{str(tiny_recipe)!r}]).task
for source, seed, revision in [("me/iml-toy", 0, "v1"), ("me/iml-toy", 0, {commit!r}), ("me/iml-toy", 1, "v1"),
                               ("me/iml-toy-partial", 1, None), ("me/not-cached", 0, None)]:
    try:
        corpus = load_corpus_dataset(source, task, seed, revision, cache_dir={str(tmp_path / "cache")!r})
        print("LOADED", source, seed, corpus_fingerprint(corpus))
    except ValueError as error:
        print("REFUSED", source, seed, error)
"""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    fingerprint = corpus_fingerprint(parse_recipe([str(tiny_recipe)]).task.build(0))
    assert lines[0] == f"LOADED me/iml-toy 0 {fingerprint}" and lines[1] == lines[0]
    assert lines[2].startswith("REFUSED me/iml-toy 1 corpus_dataset='me/iml-toy' was built with seed 0"), lines[2]
    assert lines[3].startswith("REFUSED me/iml-toy-partial 1 corpus_dataset='me/iml-toy-partial' cannot be read"), (
        lines[3]
    )
    assert "README.md" in lines[3]
    assert lines[4].startswith("REFUSED me/not-cached 0 corpus_dataset='me/not-cached' cannot be read"), lines[4]


def test_a_knowledge_base_file_is_compared_by_content_not_by_path(tmp_path):
    """A CVDB corpus pushed from one machine reads on another with its own copy of the file; the card
    records the file's sha256, not its local path."""
    (tmp_path / "machine-a").mkdir()
    (tmp_path / "machine-b").mkdir()
    here = write_cvdb(tmp_path / "machine-a" / "cross-verified-database.csv")
    task = EntitiesTask(
        knowledge_base="cvdb", kb_path=str(here), num_entities=6, fraction_qd2incons=0.0, fraction_qd1consis=0.5
    )
    corpus = task.build(0)
    folder = push_corpus.stage_corpus(corpus, task, 0, tmp_path / "staged")
    card = DatasetCard.load(folder / "README.md")
    assert str(tmp_path) not in (folder / "README.md").read_text()
    assert "kb_path" not in card.data.iml_hf["task"]
    assert card.data.iml_hf["task_files"] == {"kb_path": hashlib.sha256(here.read_bytes()).hexdigest()}
    assert card.data.iml_hf["task"]["knowledge_base"] == "cvdb"

    there = shutil.copy(here, tmp_path / "machine-b" / "cvdb.csv")
    copy = EntitiesTask(
        knowledge_base="cvdb", kb_path=str(there), num_entities=6, fraction_qd2incons=0.0, fraction_qd1consis=0.5
    )
    loaded = load_corpus_dataset(str(folder), copy, 0, cache_dir=tmp_path / "cache")
    assert corpus_fingerprint(loaded) == corpus_fingerprint(corpus)

    changed = write_cvdb(tmp_path / "machine-b" / "newer.csv", rows=[*ROWS[:-1], [*ROWS[-1][:-1], "4001"]])
    newer = EntitiesTask(
        knowledge_base="cvdb", kb_path=str(changed), num_entities=6, fraction_qd2incons=0.0, fraction_qd1consis=0.5
    )
    with pytest.raises(ValueError, match=r"was built from another task.kb_path file than the recipe's .*newer.csv"):
        load_corpus_dataset(str(folder), newer, 0, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"task.num_entities: dataset 6, recipe 4"):
        load_corpus_dataset(
            str(folder),
            EntitiesTask(
                knowledge_base="cvdb",
                kb_path=str(there),
                num_entities=4,
                fraction_qd2incons=0.0,
                fraction_qd1consis=0.5,
            ),
            0,
            cache_dir=tmp_path / "cache",
        )
