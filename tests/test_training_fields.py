"""TrainingArguments' fields read from transformers' source (no import) against the class itself,
and the run's own check of every stage's TrainingArguments."""

from __future__ import annotations

import dataclasses
import enum
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from conftest import TINY_RECIPE

from iml_hf.config import RecipeError, parse_recipe
from iml_hf.config.training_fields import UNKNOWN, _from_class, _from_source, _package_dir, training_fields
from iml_hf.config.validation import describe

ROOT = Path(__file__).resolve().parents[1]


def _plain(annotation: typing.Any) -> str:
    """An annotation as text without module paths (the rebuilt enums live in another module)."""
    return re.sub(r"\b[\w.]+\.(\w+)", r"\1", str(annotation)).replace("<enum '", "").replace("<class '", "")


def test_the_source_reading_equals_the_class():
    source, live = _from_source(_package_dir()), _from_class()
    assert list(source) == list(live) and len(source) > 100  # every init field, in order
    for name, field in live.items():
        read = source[name]
        assert _plain(read.annotation) == _plain(field.annotation), name
        assert describe(read.annotation) == describe(field.annotation), name  # what errors and --help say
        assert read.help == field.help, name
        if read.default is not UNKNOWN:  # a computed default (optim's) is left unknown, never guessed
            assert read.default == field.default, name
    known = [name for name, f in source.items() if f.default is not UNKNOWN]
    assert len(known) > 0.95 * len(source)
    strategies = typing.get_args(source["eval_strategy"].annotation)[0]
    assert issubclass(strategies, enum.Enum) and [e.value for e in strategies] == ["no", "steps", "epoch"]


def test_reading_the_fields_imports_neither_torch_nor_transformers():
    code = (
        "import sys; from iml_hf.config.training_fields import training_fields; n = len(training_fields()); "
        "print(n, sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    count, imported = done.stdout.split(" ", 1)
    assert int(count) > 100 and imported.strip() == "[]"


def test_the_reader_skips_non_init_fields_and_refuses_a_source_it_does_not_know(tmp_path):
    (tmp_path / "training_args.py").write_text(
        "import dataclasses\nfrom dataclasses import field\n\n@dataclasses.dataclass\nclass TrainingArguments:\n"
        "    learning_rate: float = field(default=5e-5, metadata={'help': 'The rate.'})\n"
        "    max_steps: int = -1\n"
        "    per_device_train_batch_size: int = dataclasses.field(default=8)\n"
        "    _n_gpu: int = dataclasses.field(init=False, default=-1)\n"
    )
    fields = _from_source(tmp_path)
    assert list(fields) == ["learning_rate", "max_steps", "per_device_train_batch_size"]
    assert fields["learning_rate"].default == 5e-5 and fields["learning_rate"].help == "The rate."
    assert fields["per_device_train_batch_size"].default == 8 and fields["max_steps"].annotation is int
    (tmp_path / "training_args.py").write_text("class Other:\n    x: int = 1\n")
    with pytest.raises(Exception, match="TrainingArguments"):
        _from_source(tmp_path)
    assert "learning_rate" in training_fields()  # the installed version reads (or falls back to the class)


def test_every_stages_training_arguments_are_checked_by_the_run_naming_the_stage_and_file(tmp_path):
    recipe = {**TINY_RECIPE, "stages": [dict(s) for s in TINY_RECIPE["stages"]]}
    recipe["stages"][1]["lr_scheduler_type"] = "reduce_lr_on_plateau"  # transformers: needs an eval strategy
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    parsed = parse_recipe([str(path)])  # parsing does not build TrainingArguments (it imports no torch)
    name = parsed.stages[1].name
    with pytest.raises(
        RecipeError, match=rf"stage '{name}': invalid training arguments: .*\(in {re.escape(str(path))}\)"
    ):
        parsed.check_training_arguments()
    assert dataclasses.is_dataclass(parsed.training_arguments(parsed.stages[0]))
