"""Pushing a run: what reaches the (recorded) Hub loads back and reproduces the run; the Trainer's
own push is refused; no token is written anywhere."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import torch
import yaml
from conftest import TINY_RECIPE
from hub_fake import install
from test_trackers import offline_trackers  # noqa: F401  (a fixture)
from transformers import AutoModelForCausalLM, AutoTokenizer

from iml_hf import train
from iml_hf.config import RecipeError, parse_recipe
from iml_hf.config.hub_keys import hub_repo_id
from iml_hf.data.corpus import load_or_build_corpus
from iml_hf.data.prepare import eval_sets
from iml_hf.data.tokenization import tokenize_corpus
from iml_hf.measure.exact_match import exact_match

SECRET = "hf_iml" + "Q7xTestTokenNeverWritten0123456789"


def _recipe_file(tmp_path, **changes):
    recipe = {**TINY_RECIPE, "output_dir": str(tmp_path / "toy-seed0"), **changes}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _em_per_set(folder, recipe) -> dict[str, float]:
    """EM of the model saved in ``folder`` on every evaluation set, by the toolkit's exact match."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    corpus = load_or_build_corpus(recipe.task, recipe.run.seed)
    sets = eval_sets(tokenize_corpus(corpus, tokenizer), recipe)
    em = {}
    for name, rows in sets.items():
        correct = exact_match(
            model, list(rows["prompt_ids"]), list(rows["answer_ids"]), tokenizer.pad_token_id, tokenizer.eos_token_id
        )
        em[name] = sum(correct) / len(correct)
    return em, {name: len(rows) for name, rows in sets.items()}


def files_under(folder) -> set[str]:
    """Every file under ``folder``, as a path relative to it."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _weights(folder) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def test_pushed_run_loads_back_and_reproduces_the_run(monkeypatch, tmp_path, capfd, caplog):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    hub = install(monkeypatch, tmp_path / "hub")
    stages = [dict(s) for s in TINY_RECIPE["stages"]]
    stages[0].update(save_strategy="steps", save_steps=3)  # a Trainer checkpoint that must stay local
    path = _recipe_file(tmp_path, stages=stages, push_to_hub=True, hub_model_id="me/toy-seed0", hub_stage_branches=True)
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(path)])
    results = train.main()
    out = tmp_path / "toy-seed0"
    recipe = parse_recipe([str(path)])

    # one repo, created private (the default) and reused if it exists; first one branch per stage, made
    # from the repo's initial commit, then main; every upload replaces what the revision held
    assert [(name, kw["repo_id"]) for name, kw in hub.calls] == [
        ("create_repo", "me/toy-seed0"),
        ("list_repo_commits", "me/toy-seed0"),
        *[
            call
            for s in ("pretrain", "x1", "x2")
            for call in (("create_branch", "me/toy-seed0"), ("upload_folder", "me/toy-seed0"))
        ],
        ("upload_folder", "me/toy-seed0"),
    ]
    created = hub.uploaded("create_repo")[0]
    assert created["private"] is True and created["exist_ok"] is True
    initial = hub.list_repo_commits("me/toy-seed0")[-1]
    assert initial.title == "initial commit"
    assert [(kw["branch"], kw["revision"]) for kw in hub.uploaded("create_branch")] == [
        (stage, initial.commit_id) for stage in ("pretrain", "x1", "x2")
    ]
    assert all(kw["delete_patterns"] == "*" for kw in hub.uploaded())
    assert all(kw.get("token") is None for _, kw in hub.calls)  # the token is HfApi's business

    main = hub.folder("me/toy-seed0")
    pushed = files_under(main)
    assert (out / "stages" / "x1").is_dir()  # local only (checkpoints/ too, while a run is resumable)
    assert not any(name.startswith(("checkpoints/", "stages/")) for name in pushed)
    assert {
        "README.md",
        "results.json",
        "metrics.jsonl",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    } <= pushed
    assert json.loads((main / "results.json").read_text()) == json.loads(json.dumps(results))

    # the pushed model and tokenizer reproduce the run's final EM on every evaluation set
    em, sizes = _em_per_set(main, recipe)
    assert em == pytest.approx(results["final_em"], abs=1e-12)
    assert all(results["stages"][s]["n"] == sizes for s in results["stages"])

    # each branch holds its stage's weights: they reproduce that stage's EM and differ between stages
    weights = {}
    for stage in ("pretrain", "x1", "x2"):
        branch = hub.folder("me/toy-seed0", stage)
        assert files_under(branch) == files_under(out / "stages" / stage)  # no results.json, metrics, events of main
        assert _em_per_set(branch, recipe)[0] == pytest.approx(results["stages"][stage]["em"], abs=1e-12)
        assert f"stage `{stage}`" in (branch / "README.md").read_text()
        weights[stage] = _weights(branch)
    for a, b in (("pretrain", "x1"), ("x1", "x2"), ("pretrain", "x2")):
        assert any(not torch.equal(weights[a][k], weights[b][k]) for k in weights[a]), (a, b)
    final = _weights(main)
    assert all(torch.equal(final[k], weights["x2"][k]) for k in final)

    # the card loads from the pushed repo id
    card = (main / "README.md").read_text()
    assert 'from_pretrained("me/toy-seed0")' in card and 'revision="pretrain"' in card

    # the token is in no written or pushed file and in no output
    captured = capfd.readouterr()
    assert "pushed the run to https://huggingface.co/me/toy-seed0" in captured.out
    for text in (captured.out, captured.err, caplog.text):
        assert SECRET not in text
    for root in (out, tmp_path / "hub"):
        for file in root.rglob("*"):
            assert not file.is_file() or SECRET.encode() not in file.read_bytes(), file


def test_push_names_the_repo_after_the_run_and_replaces_what_it_held(monkeypatch, tmp_path):
    """A sweep's run folder is ``<DIR>/<values>/seed<S>``: the repo is named after the recipe and seed
    (the tracker run name), under the user's namespace, and ends up holding this run's files only."""
    hub = install(monkeypatch, tmp_path / "hub")
    out = tmp_path / "sweep" / "task.modulus=8" / "seed0"
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "output_dir": str(out), "push_to_hub": True, "hub_private": False}))
    earlier = tmp_path / "earlier-run"  # what another run pushed to the same repo before
    earlier.mkdir()
    (earlier / "results.json").write_text("{}")
    (earlier / "only-the-earlier-run.txt").write_text("stale")
    hub.create_repo("me/toy-seed0", exist_ok=True)
    hub.upload_folder(repo_id="me/toy-seed0", folder_path=earlier)
    hub.calls.clear()

    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(path)])
    train.main()
    assert hub.uploaded("create_repo")[0]["repo_id"] == "toy-seed0"
    assert hub.uploaded("create_repo")[0]["private"] is False
    assert hub.uploaded("create_branch") == []
    main = hub.folder("me/toy-seed0")  # the Hub put it under the token's user: the card says so
    assert 'from_pretrained("me/toy-seed0")' in (main / "README.md").read_text()
    assert (out / "README.md").read_text() == (main / "README.md").read_text()
    assert not (out / "stages").exists()
    assert files_under(main) == files_under(out)  # exactly this run: the earlier run's files are gone
    assert (main / "results.json").read_text() == (out / "results.json").read_text()


@pytest.mark.usefixtures("offline_trackers")
def test_push_leaves_wandb_files_out_and_takes_tensorboard(monkeypatch, tmp_path):
    """wandb writes into ``<output_dir>/wandb`` when WANDB_DIR is unset: host, user, command line stay local."""
    hub = install(monkeypatch, tmp_path / "hub")
    path = _recipe_file(tmp_path, push_to_hub=True, hub_model_id="me/toy-seed0")
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(path), "--training.report_to=[tensorboard, wandb]"])
    train.main()
    out = tmp_path / "toy-seed0"
    assert any(name.endswith(".wandb") for name in files_under(out / "wandb"))  # the run's own wandb files
    pushed = files_under(hub.folder("me/toy-seed0"))
    assert not any(name.startswith("wandb/") or "wandb" in name.split("/")[-1] for name in pushed), pushed
    tensorboard = {name for name in pushed if name.startswith("tensorboard/")}
    assert tensorboard and tensorboard == {f"tensorboard/{name}" for name in files_under(out / "tensorboard")}
    assert files_under(hub.folder("me/toy-seed0")) == {
        name for name in files_under(out) if not name.startswith(("wandb/", "checkpoints/", "stages/"))
    }


def test_the_default_repo_id_is_the_run_name(tiny_recipe):
    assert (
        hub_repo_id(parse_recipe([str(tiny_recipe), "--push_to_hub=true", "--output_dir=runs/my run"])) == "tiny-seed0"
    )
    assert hub_repo_id(parse_recipe([str(tiny_recipe), "--push_to_hub=true", "--seed=3"])) == "tiny-seed3"
    assert hub_repo_id(parse_recipe([str(tiny_recipe), "--push_to_hub=true", "--training.run_name=mine"])) == "mine"
    assert hub_repo_id(parse_recipe([str(tiny_recipe), "--push_to_hub=true", "--hub_model_id=me/x"])) == "me/x"


@pytest.mark.parametrize(
    "key, value, points_at",
    [
        ("training.push_to_hub", "true", "'push_to_hub'"),
        ("training.hub_model_id", "me/x1", "'hub_model_id'"),
        ("training.hub_strategy", "end", "'hub_stage_branches'"),
        ("training.hub_token", SECRET, "HF_TOKEN"),
        ("stages.x1.push_to_hub", "true", "'push_to_hub'"),
    ],
)
def test_the_trainers_own_push_is_refused_at_parse_time(tiny_recipe, key, value, points_at):
    with pytest.raises(RecipeError) as error:
        parse_recipe([str(tiny_recipe), f"--{key}={value}"])
    message = str(error.value)
    assert key in message and points_at in message and SECRET not in message


def test_train_exits_with_a_clear_error_for_training_push_to_hub(monkeypatch, tiny_recipe, tmp_path, capsys):
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(tiny_recipe), "--training.push_to_hub=true"])
    with pytest.raises(SystemExit) as code:
        train.main()
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert "training.push_to_hub" in err and "top-level key 'push_to_hub'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--push_to_hub=true", "--save_model=false"], "needs save_model=true"),
        (["--hub_stage_branches=true"], "needs push_to_hub=true"),
        (["--push_to_hub=true", "--hub_model_id=me/a/b"], "hub_model_id='me/a/b' is not a Hub repo id"),
        (["--push_to_hub=true", "--training.run_name=my run"], "the run name 'my run'"),
        (["--push_to_hub=true", "--training.run_name=my run"], "set hub_model_id"),
        (["--hub_model_id=me/a--b"], "hub_model_id='me/a--b' is not a Hub repo id"),  # the Hub's own rules
        (["--hub_model_id=me/-a"], "hub_model_id='me/-a' is not a Hub repo id"),
        (["--corpus_repo_id=corpus."], "corpus_repo_id='corpus.' is not a Hub repo id"),
        (["--corpus_revision=v1"], "corpus_revision is set but corpus_dataset is not"),
        (["--corpus_repo_id=a b"], "corpus_repo_id='a b'"),
    ],
)
def test_inconsistent_hub_keys_are_named(tiny_recipe, args, expected):
    with pytest.raises(RecipeError) as error:
        parse_recipe([str(tiny_recipe), *args])
    assert expected in str(error.value)


def test_stage_names_must_be_branch_names_when_pushed_per_stage(tmp_path):
    stages = [dict(s) for s in TINY_RECIPE["stages"]]
    stages[0]["name"] = "main"
    path = _recipe_file(tmp_path, stages=stages, push_to_hub=True, hub_stage_branches=True)
    with pytest.raises(RecipeError, match="stage name 'main' cannot be a branch name"):
        parse_recipe([str(path)])
