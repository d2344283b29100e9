"""Recipe parsing: precedence, nested stage overrides, and errors that name the closest key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iml_hf.config import RecipeError, parse_recipe


def _write(tmp_path, recipe, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def test_precedence_default_recipe_command_line(tiny_recipe):
    recipe = parse_recipe([str(tiny_recipe)])
    assert recipe.task.modulus == 8  # recipe beats the default (120)
    assert recipe.task.x1_test_fraction == 0.5  # default where the recipe is silent
    assert recipe.training["learning_rate"] == 3e-3  # "3e-3" string coerced to a number
    x2 = recipe.training_arguments(recipe.stages[2])
    assert x2.learning_rate == 1e-3 and x2.max_steps == 4 and x2.seed == 0

    recipe = parse_recipe(
        [
            str(tiny_recipe),
            "--seed",
            "3",
            "--task.modulus=12",
            "--stages.x2.learning_rate=5e-4",
            "--training.weight_decay=0.2",
            "--stages.x1.replay={pretrain: 0.25}",
        ]
    )
    assert recipe.run.seed == 3 and recipe.task.modulus == 12
    x1, x2 = (recipe.training_arguments(s) for s in recipe.stages[1:])
    assert x2.learning_rate == 5e-4 and x2.seed == 3
    assert x1.learning_rate == 3e-3 and x1.weight_decay == 0.2
    assert recipe.stages[1].replay == {"pretrain": 0.25}
    assert recipe.resolved["stages"][2]["learning_rate"] == 5e-4
    assert recipe.resolved["task"]["definition_repeats"] == 2


def test_config_flag_is_equivalent_to_positional(tiny_recipe):
    assert parse_recipe(["--config", str(tiny_recipe)]).resolved == parse_recipe([str(tiny_recipe)]).resolved


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["--trainig.learning_rate=1e-3"], "did you mean '--training.learning_rate'"),
        (["--stages.x1.learnig_rate=1e-3"], "did you mean '--stages.x1.learning_rate'"),
        (["--task.modulos=12"], "did you mean '--task.modulus'"),
        (["--sed=3"], "did you mean '--seed'"),
        (["--gradient_alignment.aliases_per_subsets=3"], "did you mean '--gradient_alignment.aliases_per_subset'"),
    ],
)
def test_misspelled_command_line_key(tiny_recipe, argv_tail, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe([str(tiny_recipe), *argv_tail])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["model"].update(num_layer=2), "did you mean 'model.num_layers'"),
        (lambda r: r["training"].update(per_device_train_batchsize=2), "training.per_device_train_batch_size"),
        (lambda r: r["stages"][1].update(max_step=3), "did you mean 'stages.x1.max_steps'"),
        (lambda r: r.update(sead=1), "did you mean 'seed'"),
        (lambda r: r["stages"][1].update(train_subsets=["x1true"]), "did you mean 'x1t'"),
        (lambda r: r["model"].update(architecture="gpt3"), "model.architecture='gpt3'"),
        (lambda r: r["task"].update(name="modmull"), "task.name='modmull' is unknown"),
        (
            lambda r: r["training"].update(lr_scheduler_type="cosinus"),
            r"training.lr_scheduler_type='cosinus' .*'cosine'",
        ),
        (lambda r: r.update(stages=[]), "no stages are defined"),
        (lambda r: r.update(gradient_alignment={"enable": True}), "did you mean 'gradient_alignment.enabled'"),
        (lambda r: r.update(embedding_geometry={"intervall": 5}), "did you mean 'embedding_geometry.interval'"),
        (lambda r: r.update(gradient_alignment={"method": "loop"}), "gradient_alignment.method='loop'"),
        (lambda r: r.update(gradient_alignment={"interval_strategy": "epochs"}), "interval_strategy='epochs'.*one of"),
        (lambda r: r.update(gradient_alignment={"subsets": ["x2true"]}), "did you mean 'x2t'"),
    ],
)
def test_bad_recipes_name_what_is_wrong(tmp_path, tiny_recipe, edit, message):
    recipe = yaml.safe_load(tiny_recipe.read_text())
    edit(recipe)
    with pytest.raises(RecipeError, match=message):
        parse_recipe([_write(tmp_path, recipe)])


def test_cli_error_exits_2_and_writes_nothing(tmp_path, tiny_recipe):
    out = tmp_path / "never"
    done = subprocess.run(
        [sys.executable, "-m", "iml_hf.train", str(tiny_recipe), f"--output_dir={out}", "--model.hiden_size=8"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "did you mean '--model.hidden_size'" in done.stderr
    assert not out.exists()
    missing = subprocess.run(
        [sys.executable, "-m", "iml_hf.train", str(tmp_path / "nope.yaml")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_mechanism_sections_parse_and_override(tiny_recipe):
    recipe = parse_recipe(
        [
            str(tiny_recipe),
            "--gradient_alignment.enabled=true",
            "--gradient_alignment.interval=7",
            "--embedding_geometry.enabled=true",
            "--embedding_geometry.plots=false",
        ]
    )
    assert recipe.gradient_alignment.enabled and recipe.gradient_alignment.interval == 7
    assert recipe.gradient_alignment.method == "factored"
    assert recipe.embedding_geometry.enabled and not recipe.embedding_geometry.plots
    assert recipe.resolved["gradient_alignment"]["interval"] == 7
    assert not parse_recipe([str(tiny_recipe)]).gradient_alignment.enabled  # off unless asked for


def test_loss_mode_defaults_to_the_tasks_and_is_validated(tiny_recipe):
    recipes = Path(__file__).parents[1] / "recipes"
    assert parse_recipe([str(tiny_recipe)]).model.loss_on == "answer"  # the toy task's default (ours)
    assert parse_recipe([str(recipes / "set_inclusion_cpu.yaml")]).model.loss_on == "full_text"  # the authors'
    entities = parse_recipe([str(recipes / "entities_cpu.yaml")])
    assert entities.model.loss_on == "answer" and entities.resolved["model"]["loss_on"] == "answer"
    authors = parse_recipe([str(recipes / "entities_cpu.yaml"), "--model.loss_on=null"])
    assert authors.model.loss_on == "full_text"  # the entity task's default is the authors' full text
    assert parse_recipe([str(tiny_recipe), "--model.loss_on=full_text"]).model.loss_on == "full_text"
    with pytest.raises(RecipeError, match="model.loss_on='full'.*full_text"):
        parse_recipe([str(tiny_recipe), "--model.loss_on=full"])


def test_help_lists_recipe_keys(tiny_recipe):
    done = subprocess.run(
        [sys.executable, "-m", "iml_hf.train", str(tiny_recipe), "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "--stages.x2.learning_rate" in done.stdout and "--task.aliases_per_number" in done.stdout


#: What each shipped recipe must parse to: its stages; GPU recipes are parsed with bf16 off (no GPU here).
SHIPPED_STAGES = {
    "toy": ["pretrain", "x1", "x2"],
    "entities_cpu": ["knowledge", "stage1", "stage2"],
    "entities_authors_cpu": ["knowledge", "stage1", "stage2"],
    "entities_3stage_cpu": ["knowledge", "stage1", "stage1_qa", "stage2"],
    "entities_gpu_base": ["stage1", "stage2"],
    "set_inclusion_cpu": ["stage1", "stage2"],
    "set_inclusion_gpu": ["stage1", "stage2"],
    "digits_qa_cpu": ["knowledge", "stage1", "stage2"],
}


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("recipes/*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_parse(path, tmp_path):
    gpu = "gpu" in path.stem
    (tmp_path / "kb").write_text("")  # the GPU recipes name a data file; parsing only checks it exists
    knowledge_base = [f"--task.kb_path={tmp_path / 'kb'}"] if "kb_path" in path.read_text() else []
    recipe = parse_recipe([str(path), *(["--training.bf16=false", *knowledge_base] if gpu else [])])
    family = "toy" if path.stem.startswith("toy") else path.stem if path.stem in SHIPPED_STAGES else "entities_gpu_base"
    assert [s.name for s in recipe.stages] == SHIPPED_STAGES[family]
    for stage in recipe.stages:
        arguments = recipe.training_arguments(stage)
        assert arguments.max_steps > 0 or arguments.num_train_epochs > 0


def test_base_recipes_state_only_what_differs(tmp_path):
    three = parse_recipe([str(Path(__file__).parents[1] / "recipes/entities_3stage_cpu.yaml")])
    two = parse_recipe([str(Path(__file__).parents[1] / "recipes/entities_cpu.yaml")])
    assert three.stages[0] == two.stages[0] and three.stages[-1] == two.stages[-1]  # inherited by name
    assert three.stages[1].train_kinds == ["definition"] and three.stages[2].train_kinds == ["question"]
    assert three.model == two.model and three.run.output_dir != two.run.output_dir
    trex = parse_recipe(
        [
            str(Path(__file__).parents[1] / "recipes/entities_trex_gpu.yaml"),
            "--training.bf16=false",
            f"--task.kb_path={tmp_path}",
        ]
    )
    assert trex.task.knowledge_base == "trex" and trex.task.num_entities == 6900
    assert trex.training["optim"] == "adafactor" and trex.task.fraction_qd1consis == 0.25  # from the base
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        parse_recipe([str(tmp_path / "a.yaml")])


def test_duplicate_yaml_keys_are_refused(tmp_path):
    (tmp_path / "dup.yaml").write_text("seed: 1\nseed: 2\n")
    with pytest.raises(RecipeError, match="duplicate key 'seed'"):
        parse_recipe([str(tmp_path / "dup.yaml")])
    (tmp_path / "dup.yaml").write_text(
        "task: {name: modmul}\nmodel:\n  num_layers: 1\n  num_layers: 2\n"
        "stages:\n  - name: s\n    train_subsets: [pretrain]\n    max_steps: 1\n"
        "    max_steps: 2\n"
    )
    with pytest.raises(RecipeError, match=r"duplicate key 'model.num_layers' \(lines 3 and 4\)"):
        parse_recipe([str(tmp_path / "dup.yaml")])
    (tmp_path / "dup.yaml").write_text(
        "task: {name: modmul}\nstages:\n  - name: s\n    train_subsets: [pretrain]\n"
        "    max_steps: 1\n    max_steps: 2\n"
    )
    with pytest.raises(RecipeError, match=r"duplicate key 'stages.s.max_steps'"):
        parse_recipe([str(tmp_path / "dup.yaml")])


def test_unknown_task_names_the_closest(tmp_path):
    (tmp_path / "t.yaml").write_text("task: {name: entitys}\nstages: []\n")
    with pytest.raises(RecipeError, match="did you mean 'entities'"):
        parse_recipe([str(tmp_path / "t.yaml")])


def test_a_missing_knowledge_base_file_is_a_parse_error(tmp_path):
    with pytest.raises(RecipeError, match="kb_path='nowhere.csv' does not exist; point it at the CVDB CSV"):
        parse_recipe(
            [
                str(Path(__file__).parents[1] / "recipes/entities_cvdb_gpu.yaml"),
                "--training.bf16=false",
                "--task.kb_path=nowhere.csv",
            ]
        )


def test_stage_kinds_and_eval_sets_are_checked(tmp_path):
    recipe = {
        "task": {"name": "entities"},
        "stages": [{"name": "s", "train_subsets": ["d1consis"], "train_kinds": ["defintion"]}],
    }
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="train_kinds"):
        parse_recipe([str(tmp_path / "k.yaml")])
    recipe["stages"][0]["train_kinds"] = ["definition"]
    recipe["evaluation"] = {"subsets": ["asoc_who_d1consis"]}
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="did you mean 'assoc_who_d1consis'"):
        parse_recipe([str(tmp_path / "k.yaml")])
