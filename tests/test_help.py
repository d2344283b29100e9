"""--help people read (descriptions, defaults, the recipe's values; refused keys hidden), --version and
the bare command, comma lists, where a bad value came from, and the generated key reference in sync."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from iml_hf.config import RecipeError, parse_recipe
from iml_hf.config.args import RunArguments, StageArguments
from iml_hf.config.help import markdown
from iml_hf.config.keys import SECTION_CLASSES
from iml_hf.measure.registry import MEASUREMENTS
from iml_hf.tasks import get_task_class

ROOT = Path(__file__).parents[1]
BUILT_IN_TASKS = ("modmul", "entities", "set_inclusion", "digits_qa")


def _help(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        parse_recipe(argv)
    assert stop.value.code == 0
    return capsys.readouterr().out


def _entry(text: str, key: str) -> str:
    """The lines of ``--key`` in the help: its own line and the indented description under it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^[* ] --{re.escape(key)} ", line))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("      ")), len(lines))
    return "\n".join(lines[start:end])


def _flat(entry: str) -> str:
    return " ".join(entry.split())


def test_a_key_shows_its_description_default_and_the_recipes_value(capsys, tiny_recipe):
    text = _help(capsys, [str(tiny_recipe), "--help"])
    rate = _flat(_entry(text, "training.learning_rate"))
    assert rate.startswith("* --training.learning_rate FLOAT")  # * : the recipe changes the default
    assert "The initial learning rate for the optimizer." in rate  # transformers' own help, first sentence
    assert "[recipe: 3e-3; default: 5e-05]" in rate
    stage = _flat(_entry(text, "stages.x2.learning_rate"))  # a stage's default is the run's training value
    assert "[recipe: 0.001; training.learning_rate: 3e-3]" in stage
    layers = _entry(text, "model.num_layers")
    assert layers.startswith("  --model.num_layers INT") and "Transformer blocks" in layers  # same as default: no *
    layers = _flat(layers)
    assert "[recipe: 1; default: 1]" in layers
    subsets = _entry(text, "evaluation.subsets")
    assert subsets.startswith("  --evaluation.subsets A,B,...") and "[default: null]" in _flat(subsets)
    assert "held-out sets" in subsets
    assert "[recipe: 16; default: 8]" in _flat(_entry(text, "training.per_device_train_batch_size"))
    assert "[default (the toolkit's): none]" in _flat(_entry(text, "training.report_to"))
    assert "--quiet" in text.split("Keys of")[0]  # a general option (iml_hf.train strips it)


def test_refused_keys_are_hidden_and_types_are_readable(capsys, tiny_recipe):
    for flag in ("--help", "--help-all"):
        text = _help(capsys, [str(tiny_recipe), flag])
        for hidden in (
            "training.output_dir",
            "training.seed",
            "training.resume_from_checkpoint",
            "training.push_to_hub",
            "training.hub_token",
            "training.hub_model_id",
            "stages.x1.output_dir",
        ):
            assert f"--{hidden} " not in text, (flag, hidden)
        assert "\n  --push_to_hub BOOL" in text and "\n* --seed INT" not in text  # the run's own keys stay
        assert "dict[str," not in text and "transformers." not in text and "typing." not in text
    assert "--training.fsdp_config" in text  # --help-all: every TrainingArguments key
    short = _help(capsys, [str(tiny_recipe), "--help"])
    assert "--training.fsdp_config" not in short and "more TrainingArguments keys" in short
    assert len(short.splitlines()) < 450 < len(text.splitlines())
    assert "--model.architecture {gpt2,llama,gpt_neox}" in short
    assert "--training.save_strategy {no,steps,epoch,best}" in short
    schedulers = _flat(_entry(short, "training.lr_scheduler_type"))
    assert "choices: linear, cosine," in schedulers and "SchedulerType" not in schedulers


def test_help_without_a_recipe_shows_every_tasks_keys(capsys):
    text = _help(capsys, ["--help"])
    for task in BUILT_IN_TASKS:
        assert f"\ntask.name={task}: " in text
    for key in ("task.modulus", "task.num_entities", "task.label_flip", "task.patch_width"):
        assert f"--{key} " in text
    assert "usage:" in text and "examples:" in text and "stages.<name>" in text
    entities = _help(capsys, ["--task.name=entities", "--help"])  # one task's keys
    assert "--task.num_entities" in entities and "--task.modulus" not in entities


def test_bare_command_prints_usage_and_exits_2():
    done = subprocess.run([sys.executable, "-m", "iml_hf.train"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: python -m iml_hf.train RECIPE.yaml") and "examples:" in done.stderr
    assert "task.name" not in done.stderr and "Traceback" not in done.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_recipe(["recipes/toy.yaml", "--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == "iml_hf 0.1.0\n"


@pytest.mark.parametrize(
    "flag, attribute, expected",
    [
        ("--evaluation.subsets=x2t,x2f", lambda r: r.evaluation.subsets, ["x2t", "x2f"]),
        ("--evaluation.subsets=[x2t, x2f]", lambda r: r.evaluation.subsets, ["x2t", "x2f"]),  # the YAML form
        ("--evaluation.extra_subsets=train_question_x1t", lambda r: r.evaluation.extra_subsets, ["train_question_x1t"]),
        ("--stages.x1.train_subsets=x1t, x1f", lambda r: r.stages[1].train_subsets, ["x1t", "x1f"]),
        ("--stages.x2.train_kinds=definition", lambda r: r.stages[2].train_kinds, ["definition"]),
        ("--gradient_alignment.subsets=x1t,x2t", lambda r: r.gradient_alignment.subsets, ["x1t", "x2t"]),
        ("--probes.targets=tag,attribute/born", lambda r: r.probes.targets, ["tag", "attribute/born"]),
        ("--training.report_to=tensorboard,wandb", lambda r: r.training["report_to"], ["tensorboard", "wandb"]),
        ("--training.report_to=none", lambda r: r.training["report_to"], "none"),  # a string where one fits
        ("--stages.x1.replay={pretrain: 0.25}", lambda r: r.stages[1].replay, {"pretrain": 0.25}),  # not a list
    ],
)
def test_comma_lists_for_list_keys(tiny_recipe, flag, attribute, expected):
    assert attribute(parse_recipe([str(tiny_recipe), flag])) == expected


def test_comma_lists_for_task_keys():
    recipe = parse_recipe([str(ROOT / "recipes" / "set_inclusion_cpu.yaml"), "--task.tags=ta,tb,tc"])
    assert recipe.task.tags == ["ta", "tb", "tc"]
    with pytest.raises(
        RecipeError,
        match=r"evaluation.subsets names 'x2ff'; did you mean 'x2f'\? "
        r"\(on the command line: --evaluation.subsets=x2t,x2ff\)",
    ):
        parse_recipe([str(ROOT / "recipes" / "toy.yaml"), "--evaluation.subsets=x2t,x2ff"])


def test_errors_name_where_the_value_came_from(tmp_path, tiny_recipe):
    with pytest.raises(
        RecipeError,
        match=r"model.num_layers=0 is not valid.*\(on the command line: "
        r"--model.num_layers=0\)$",
    ):
        parse_recipe([str(tiny_recipe), "--model.num_layers=0"])
    with pytest.raises(RecipeError, match=r"\(on the command line: --model.num_layers=two\)$"):
        parse_recipe([str(tiny_recipe), "--model.num_layers=two"])
    text = (ROOT / "recipes" / "toy.yaml").read_text()
    line = text.splitlines().index("  num_layers: 1") + 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  num_layers: 1", "  num_layers: 0"))
    with pytest.raises(
        RecipeError, match=rf"model.num_layers=0 is not valid.*\(in {re.escape(str(bad))} line {line}\)$"
    ):
        parse_recipe([str(bad)])
    child = tmp_path / "child.yaml"  # a value set by the base file names the base file
    child.write_text("base: bad.yaml\nseed: 2\nmodel:\n  hidden_size: 64\n")
    with pytest.raises(RecipeError, match=rf"\(in {re.escape(str(tmp_path / 'bad.yaml'))} line {line}\)$"):
        parse_recipe([str(child)])
    child.write_text("base: bad.yaml\nmodel:\n  num_layers: 3\n  hidden_size: 66\n")  # and the child its own
    with pytest.raises(RecipeError, match=rf"hidden_size=66 must be divisible.*\(in {re.escape(str(child))} line 4\)$"):
        parse_recipe([str(child)])
    stage = tmp_path / "stage.yaml"
    stage.write_text(
        yaml.safe_dump(
            {
                **yaml.safe_load(tiny_recipe.read_text()),
                "stages": [{"name": "x1", "train_subsets": ["x1t"], "max_step": 3}],
            },
            sort_keys=False,
        )
    )
    with pytest.raises(
        RecipeError,
        match=rf"unknown key 'stages.x1.max_step' in {re.escape(str(stage))} line \d+; "
        "did you mean 'stages.x1.max_steps'",
    ):
        parse_recipe([str(stage)])


def test_every_field_has_a_description():
    classes = [
        RunArguments,
        StageArguments,
        *SECTION_CLASSES.values(),
        *(m.arguments for m in MEASUREMENTS.values()),
        *(get_task_class(name) for name in BUILT_IN_TASKS),
    ]
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in classes
        for f in dataclasses.fields(cls)
        if f.init and not f.metadata.get("help")
    ]
    assert not missing


def test_recipe_key_reference_is_in_sync():
    reference = ROOT / "docs" / "recipe-keys.md"
    assert reference.read_text() == markdown(), (
        "docs/recipe-keys.md is out of date: python -m iml_hf.config.help --markdown > docs/recipe-keys.md"
    )
    text = reference.read_text()
    assert "| `model.num_layers` | an integer | `1` | Transformer blocks of a model from scratch. |" in text
    assert "`training.learning_rate`" in text and "`training.output_dir`" not in text.split("Never recipe keys")[0]
