"""Publishing a corpus and reading it back: the pushed files load with ``load_dataset`` into the
generated corpus, the card describes it, and a run that reads it equals one that generated it."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard

from conftest import run_recipe
from hub_fake import install
from iml_hf import push_corpus
from iml_hf.corpus import corpus_fingerprint, corpus_metadata, load_corpus_dataset, load_or_build_corpus
from iml_hf.corpus_card import COLUMN_DESCRIPTIONS, SUBSET_DESCRIPTIONS, subset_description
from iml_hf.recipe import parse_recipe
from iml_hf.tasks import CORPUS_COLUMNS, task_registry


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
    assert card.data.configs == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-00000-of-00001.parquet"},
        {"split": "test", "path": "data/test-00000-of-00001.parquet"}]}]
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


def test_every_builtin_subset_and_column_is_described():
    assert set(COLUMN_DESCRIPTIONS) == set(CORPUS_COLUMNS)
    for name, cls in task_registry().items():
        assert set(SUBSET_DESCRIPTIONS[name]) == set(cls.subsets), name


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
    assert corpus_fingerprint(load_corpus_dataset(str(folder), task, 0, cache_dir=cache)) == corpus_fingerprint(task.build(0))

    other = parse_recipe([str(tiny_recipe), "--task.modulus=12", "--task.definition_repeats=3"]).task
    with pytest.raises(ValueError, match=r"task.definition_repeats: dataset 2, recipe 3, task.modulus: dataset 8, recipe 12"):
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
