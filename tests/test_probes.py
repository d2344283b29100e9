"""Linear probes: planted signals, grouped folds, labels from a corpus, the hidden states read,
the ``analyze probes`` CLI and the stage-end measurement."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from conftest import TINY_RECIPE, build_tiny_model, run_recipe
from datasets import DatasetDict
from transformers import GPT2Config, GPT2LMHeadModel

from iml_hf import tasks
from iml_hf.analysis.probe_report import ProbeInputs, run_probes
from iml_hf.analysis.probes import (
    ProbeError,
    build_probe_set,
    declared_labels,
    grouped_folds,
    hidden_representations,
    relation_of,
    score_probe,
    variable_inputs,
)
from iml_hf.analyze import main
from iml_hf.config import RecipeError, build_recipe
from iml_hf.config.measurement_args import ProbeArguments
from iml_hf.data.corpus import corpus_fingerprint
from iml_hf.data.tokenization import build_wordlevel_tokenizer
from iml_hf.tasks import corpus_row, string_table
from iml_hf.tasks.entities import EntitiesTask
from iml_hf.tasks.subsets import SubsetMeaning

ENTITIES = {
    "name": "entities",
    "num_entities": 40,
    "fraction_qd1consis": 0.2,
    "fraction_qd2incons": 0.2,
    "fraction_qd4consis": 0.1,
    "fraction_d1consis": 0.15,
    "fraction_d2consis": 0.15,
    "fraction_d3consis": 0.1,
    "fraction_q": 0.0,
    "fraction_no_qd_baseline": 0.05,
}


@pytest.fixture(scope="module")
def entities_corpus():
    return EntitiesTask(**{k: v for k, v in ENTITIES.items() if k != "name"}).build(0)


def planted(n_groups: int = 100, per_group: int = 3, d: int = 8, seed: int = 0):
    """Two representations of ``n_groups * per_group`` variables: noise, and noise plus a label
    direction; labels are constant within a group (as a tag is within a referent's variables)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group).astype(str)
    labels = np.repeat(rng.permutation(np.arange(n_groups) % 2), per_group).astype(str)
    noise = rng.normal(size=(2, len(labels), d)).astype(np.float32)
    noise[1, :, 0] += 4 * (labels == "1")
    return noise, labels, groups


def test_planted_signal_is_found_and_shuffled_labels_are_at_chance():
    layers, labels, groups = planted()
    result = score_probe(layers, labels, groups, folds=5, seed=0)
    accuracy, shuffled = result["accuracy"]["mean"], result["shuffled"]["mean"]
    assert accuracy[1] > 0.97 and result["accuracy"]["ci_low"][1] > 0.9
    assert abs(accuracy[0] - 0.5) < 0.1  # noise alone
    assert abs(shuffled[1] - 0.5) < 0.1 and abs(shuffled[0] - 0.5) < 0.1
    assert abs(result["chance"] - 0.5) < 0.1 and result["folds"] == 5 and result["groups"] == 100
    assert all(
        0 <= lo <= m <= hi <= 1
        for lo, m, hi in zip(result["accuracy"]["ci_low"], accuracy, result["accuracy"]["ci_high"])
    )
    assert score_probe(layers, labels, groups, folds=5, seed=0) == result  # deterministic per seed


def test_grouped_folds_never_put_one_referent_on_both_sides():
    _, labels, groups = planted(n_groups=23, per_group=3)
    splits = grouped_folds(labels, groups, 5, seed=1)
    assert len(splits) == 5
    tested = np.concatenate([test for _, test in splits])
    assert sorted(tested.tolist()) == list(range(len(labels)))  # every variable tested once
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
    three = np.array(list("aaabbbaaa"))
    assert len(grouped_folds(three, groups[:9], 5, seed=0)) == 3  # three referents: three folds
    with pytest.raises(ProbeError, match="only one class"):
        grouped_folds(np.array(["a"] * 6), groups[:6], 5, 0)
    with pytest.raises(ProbeError, match="single variable"):
        grouped_folds(np.array(["a", "b", "c"]), np.array(["1", "2", "3"]), 5, 0)
    with pytest.raises(ProbeError, match="only 1 group"):
        grouped_folds(np.array(["a", "b", "a", "b"]), np.array(["g"] * 4), 5, 0)


def test_the_tasks_declarations_give_tag_and_consistency():
    labels = declared_labels()
    assert labels["qd1consis"] == ("1", True) and labels["qd2incons"] == ("2", False)
    assert labels["d3consis"] == ("3", True) and labels["qd4consis"] == (None, True)
    assert labels["x1f"] == ("f", False) and "no_qd_baseline" not in labels
    assert relation_of("Q: When was k q z born ? A:", "k q z") == "Q: When was [X] born ? A:"
    assert relation_of("Q: When was kqz born ? A:", "k q z") is None


def test_labels_match_the_entities_corpus(entities_corpus):
    probe_set = build_probe_set(entities_corpus)
    definitions = {r["key"]: r for r in entities_corpus["train"] if r["kind"] == "definition"}
    assert set(probe_set.variables) == set(definitions)
    expected_tag = {
        "qd1consis": "1",
        "qd2incons": "2",
        "d1consis": "1",
        "d2consis": "2",
        "d3consis": "3",
        "qd4consis": None,
    }
    assert set(probe_set.subsets) == set(expected_tag)
    for i, key in enumerate(probe_set.variables):
        subset = definitions[key]["subset"]
        assert probe_set.subsets[i] == subset
        assert probe_set.labels["tag"][i] == expected_tag[subset]
        assert probe_set.labels["consistent"][i] == ("inconsistent" if subset == "qd2incons" else "consistent")
        assert probe_set.labels["referent"][i] == probe_set.referents[i] == definitions[key]["referent"]
    assert sorted(probe_set.relations) == sorted(
        f"attribute/{n}"
        for n in (
            "gender_of_x",
            "when_was_x_born",
            "when_did_x_die",
            "where_did_x_live",
            "what_did_x_do",
            "nationality_of_x",
        )
    )
    born = probe_set.labels["attribute/when_was_x_born"]
    for split in ("train", "test"):  # the answers about each variable's own referent (d2incons swaps them)
        for row in entities_corpus[split]:
            if (
                row["kind"] == "question"
                and row["key"] in definitions
                and "When was" in row["prompt"]
                and not row["subset"].startswith(("d2incons", "ctx_"))
            ):
                assert born[probe_set.variables.index(row["key"])] == row["answer"]
    index, labels, _ = probe_set.dataset("tag")  # qd4consis variables have no tag label
    assert len(index) == sum(s != "qd4consis" for s in probe_set.subsets) and set(labels) == {"1", "2", "3"}
    assert probe_set.expand(["tag", "attributes", "tag"])[:2] == ["tag", next(iter(probe_set.relations))]

    stage2 = build_probe_set(entities_corpus, ["d1consis", "d2consis"])
    assert set(stage2.subsets) == {"d1consis", "d2consis"} and set(stage2.labels["tag"]) == {"1", "2"}
    with pytest.raises(ProbeError, match="no_qd_baseline"):
        build_probe_set(entities_corpus, ["d1consis", "no_qd_baseline"])
    with pytest.raises(ProbeError, match="attribute targets"):
        probe_set.expand(["attribute/shoe_size"])


def test_toy_task_tags_and_consistency_come_from_its_declaration(tiny_corpus):
    probe_set = build_probe_set(tiny_corpus)
    seen = {(s, t, c) for s, t, c in zip(probe_set.subsets, probe_set.labels["tag"], probe_set.labels["consistent"])}
    assert seen == {
        ("x1t", "t", "consistent"),
        ("x1f", "f", "inconsistent"),
        ("x2t", "t", "consistent"),
        ("x2f", "f", "consistent"),
    }


class _AnyNamesTask:
    """A task whose subset names say nothing: its declaration alone gives the probe labels."""

    name = "any_names"
    subset_meanings = {
        "trusted": SubsetMeaning("tag-1 definitions that hold", tag=1, consistent=True, stage="2"),
        "doubted": SubsetMeaning("tag-2 definitions that mislead", tag=2, consistent=False, stage="1"),
        "plain": SubsetMeaning("questions, no definition", stage="1"),
    }


def _any_names_corpus() -> DatasetDict:
    rows = []
    for i in range(12):
        subset = ("trusted", "doubted", "plain")[i % 3]
        key, number = f"v{i}", str(i % 4)
        if subset != "plain":
            rows.append(corpus_row("", f"tag{subset} {key} {number}", subset, "definition", key, number))
        rows.append(corpus_row(f"{key} plus 1 =", str(int(number) + 1), subset, "question", key, number))
    return DatasetDict({"train": string_table(rows), "test": string_table(rows[:1])})


def test_a_task_with_any_subset_names_gets_labels_from_its_declaration(monkeypatch):
    corpus = _any_names_corpus()
    with pytest.raises(ProbeError, match="no definitions"):  # an undeclared task gives no labels
        build_probe_set(corpus)
    monkeypatch.setitem(tasks._REGISTRY, "any_names", _AnyNamesTask)
    probe_set = build_probe_set(corpus)
    seen = {(s, t, c) for s, t, c in zip(probe_set.subsets, probe_set.labels["tag"], probe_set.labels["consistent"])}
    assert seen == {("trusted", "1", "consistent"), ("doubted", "2", "inconsistent")}
    assert len(probe_set.variables) == 8 and list(probe_set.relations) == ["attribute/x_plus_1"]

    class Contrary(_AnyNamesTask):
        subset_meanings = {"trusted": SubsetMeaning("tag-2 definitions", tag=2, consistent=True)}

    monkeypatch.setitem(tasks._REGISTRY, "contrary", Contrary)
    with pytest.raises(ProbeError, match="declare subset 'trusted' differently"):
        build_probe_set(corpus)


def _manual_gpt2_states(model, ids: list[int]) -> list[torch.Tensor]:
    """Every hidden state of one unpadded sequence, block by block (the last after ln_f)."""
    t = model.transformer
    x = torch.tensor([ids])
    h = t.wte(x) + t.wpe(torch.arange(len(ids))[None])
    states = [h]
    for block in t.h:
        h = block(h)
        h = h[0] if isinstance(h, tuple) else h
        states.append(h)
    states[-1] = t.ln_f(states[-1])
    return [s[0] for s in states]


def test_hidden_states_equal_a_manual_forward_of_each_variable(tiny_tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            n_layer=2,
            n_embd=16,
            n_head=2,
            vocab_size=len(tiny_tokenizer),
            n_positions=16,
            resid_pdrop=0.3,
            embd_pdrop=0.3,
            attn_pdrop=0.3,
        )
    )
    model.train()  # dropout on: the reading must switch it off and restore the mode
    variables = ["x05", "x01 x02", "3 4 5", "x07", "x03 x04"]  # one, two and three tokens
    inputs, offset = variable_inputs(tiny_tokenizer, variables)
    assert offset == 1 and all(ids[0] == tiny_tokenizer.bos_token_id for ids in inputs)
    mean = hidden_representations(model, inputs, offset, "mean", batch_size=1)
    last = hidden_representations(model, inputs, offset, "last", batch_size=2)
    assert model.training and mean.shape == (3, 5, 16) and mean.dtype == np.float32
    model.eval()
    with torch.no_grad():
        for i, ids in enumerate(inputs):
            states = _manual_gpt2_states(model, ids)
            for layer, h in enumerate(states):
                torch.testing.assert_close(torch.from_numpy(mean[layer, i]), h[1:].mean(0), atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(torch.from_numpy(last[layer, i]), h[-1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", ["llama", "gpt_neox"])
def test_hidden_states_of_other_architectures_equal_their_own_forward(architecture, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, architecture).eval()
    inputs, offset = variable_inputs(tiny_tokenizer, ["x05", "x01 x02", "x06", "3 4 5"])
    mean = hidden_representations(model, inputs, offset, "mean", batch_size=8)
    with torch.no_grad():
        for i, ids in enumerate(inputs):
            states = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
            expected = torch.stack([h[0, 1:].mean(0) for h in states])
            torch.testing.assert_close(torch.from_numpy(mean[:, i]), expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory, entities_corpus):
    """A tiny GPT-2 with the corpus's WordLevel tokenizer, saved; the corpus beside it."""
    root = tmp_path_factory.mktemp("probe_cli")
    tokenizer = build_wordlevel_tokenizer(entities_corpus)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=16,
        n_head=2,
        vocab_size=len(tokenizer),
        n_positions=32,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    entities_corpus.save_to_disk(str(root / "corpus"))
    return root


def test_cli_on_a_checkpoint_and_corpus_writes_json_plots_and_a_table(saved_checkpoint, tmp_path, capsys):
    out = tmp_path / "probes"
    code = main(
        [
            "probes",
            "--model",
            str(saved_checkpoint / "model"),
            "--data",
            str(saved_checkpoint / "corpus"),
            "--output_dir",
            str(out),
            "--targets",
            "tag",
            "consistent",
            "referent",
            "attribute/gender_of_x",
            "--folds",
            "3",
            "--torch_threads",
            "1",
        ]
    )
    assert code == 0
    summary = json.loads((out / "probes.json").read_text())
    assert summary["num_layers"] == 2 and summary["representations"] == ["embeddings", "layer 1", "layer 2"]
    assert summary["target_order"] == ["tag", "consistent", "referent", "attribute/gender_of_x"]  # JSON keys are sorted
    assert sorted(summary["targets"]) == sorted(summary["target_order"])
    tag = summary["targets"]["tag"]
    assert tag["folds"] == 3 and len(tag["accuracy"]["mean"]) == 3 and tag["classes"] == {"1": 14, "2": 14, "3": 4}
    assert "single variable" in summary["targets"]["referent"]["skipped"]  # one variable per entity
    for name in ("tag.png", "consistent.png", "attribute-gender_of_x.png"):
        assert (out / name).stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "tag: 32 variables, 3 classes" in printed and "layer 2" in printed and "referent: skipped" in printed


def test_cli_rebuilds_the_corpus_of_a_run_folder_and_refuses_bad_input(
    saved_checkpoint, entities_corpus, tmp_path, capsys
):
    run = saved_checkpoint / "model"
    results = {"recipe": {"task": ENTITIES, "seed": 0}, "corpus": {"fingerprint": corpus_fingerprint(entities_corpus)}}
    (run / "results.json").write_text(json.dumps(results))
    try:
        assert (
            main(
                [
                    "probes",
                    "--model",
                    str(run),
                    "--output_dir",
                    str(tmp_path / "a"),
                    "--subsets",
                    "d1consis",
                    "d2consis",
                    "--targets",
                    "tag",
                    "--folds",
                    "2",
                ]
            )
            == 0
        )
        summary = json.loads((tmp_path / "a" / "probes.json").read_text())
        assert summary["subsets"] == {"d1consis": 6, "d2consis": 6} and "rebuilt" in summary["data"]

        (run / "results.json").write_text(json.dumps({**results, "corpus": {"fingerprint": "0" * 64}}))
        assert main(["probes", "--model", str(run), "--output_dir", str(tmp_path / "b")]) == 2
        assert "differs from the one the run was trained on" in capsys.readouterr().err
    finally:
        (run / "results.json").unlink()
    bad = [
        (["--targets", "tags"], "did you mean 'tag'"),
        (["--subsets", "no_qd_baseline"], "have no definitions"),
        (["--subsets", "d1consis", "--targets", "consistent"], "only one class"),
    ]
    for flags, message in bad:
        out = tmp_path / "never"
        assert (
            main(
                [
                    "probes",
                    "--model",
                    str(run),
                    "--data",
                    str(saved_checkpoint / "corpus"),
                    "--output_dir",
                    str(out),
                    *flags,
                ]
            )
            == 2
        )
        assert message in capsys.readouterr().err and not out.exists()
    assert main(["probes", "--model", str(run), "--output_dir", str(tmp_path / "never")]) == 2
    assert "pass --data" in capsys.readouterr().err and not (tmp_path / "never").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["probes", "--model", str(run), "--output_dir", str(tmp_path / "never"), "--folds", "1"])
    assert exit_.value.code == 2 and "--folds" in capsys.readouterr().err


def test_probe_arguments_and_recipe_sections_are_checked():
    with pytest.raises(RecipeError, match="probes.folds=1"):
        ProbeArguments(folds=1)
    with pytest.raises(RecipeError, match="probes.position='first'"):
        ProbeArguments(position="first")
    with pytest.raises(RecipeError, match="did you mean 'attributes'"):
        ProbeArguments(targets=["atributes"])
    ProbeArguments(targets=["attribute/when_was_x_born", "referent"])
    base = {**TINY_RECIPE, "output_dir": "unused"}
    with pytest.raises(RecipeError, match="unknown key 'probes.tragets'.*did you mean 'probes.targets'"):
        build_recipe({**base, "probes": {"tragets": ["tag"]}})
    with pytest.raises(RecipeError, match="probes.subsets names 'x2ff'.*did you mean 'x2f'"):
        build_recipe({**base, "probes": {"subsets": ["x2ff"]}})
    assert build_recipe({**base, "probes": {"enabled": True}}).probes.targets == ["tag", "consistent", "attributes"]


def test_a_probe_that_cannot_run_is_recorded_as_skipped(tiny_corpus, tiny_tokenizer, tmp_path):
    pretrain_only = tiny_corpus.filter(lambda row: row["subset"] == "pretrain")
    probes = ProbeInputs.build(pretrain_only, tiny_tokenizer, None, ["tag"])
    assert "no definitions" in probes.skipped
    with pytest.raises(ProbeError):
        run_probes(None, probes, ProbeArguments(), tmp_path / "never", {})
    from iml_hf.measure.callbacks.probes import ProbeCallback

    trainer = types.SimpleNamespace(position=lambda state: {"stage": "x1", "stage_index": 1}, model=None)
    callback = ProbeCallback(trainer, probes, None, tmp_path, ProbeArguments(enabled=True))
    callback.measure(None)
    assert "no definitions" in callback.latest["skipped"] and not (tmp_path / "probes").exists()


def test_stage_end_probes_match_the_cli_on_the_saved_run(monkeypatch, tmp_path, capsys):
    probes = {"enabled": True, "targets": ["tag", "consistent", "referent"], "folds": 3}
    results, _ = run_recipe(monkeypatch, tmp_path, model={**TINY_RECIPE["model"], "num_layers": 2}, probes=probes)
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "probes").iterdir()) == ["0-pretrain", "1-x1", "2-x2"]
    final = json.loads((run / "probes" / "2-x2" / "probes.json").read_text())
    latest = results["stages"]["x2"]["probes"]
    assert latest["targets"]["tag"]["accuracy"] == final["targets"]["tag"]["accuracy"]["mean"]
    assert (run / "probes" / "2-x2" / "tag.png").exists()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {r["name"]: r for r in rows if r["stage"] == "x2" and r["family"] == "probes"}
    assert sorted(logged) == sorted(
        f"probes/{t}/layer_{i}" for t in ("tag", "consistent", "referent") for i in range(3)
    )
    assert logged["probes/tag/layer_2"]["value"] == final["targets"]["tag"]["accuracy"]["mean"][2]
    assert logged["probes/tag/layer_2"]["chance"] == final["targets"]["tag"]["chance"]

    assert (
        main(
            [
                "probes",
                "--model",
                str(run),
                "--output_dir",
                str(tmp_path / "cli"),
                "--targets",
                "tag",
                "consistent",
                "referent",
                "--folds",
                "3",
            ]
        )
        == 0
    )
    cli = json.loads((tmp_path / "cli" / "probes.json").read_text())
    for target in ("tag", "consistent", "referent"):
        for key in ("accuracy", "shuffled"):
            np.testing.assert_allclose(cli["targets"][target][key]["mean"], final["targets"][target][key]["mean"])
