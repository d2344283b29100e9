"""Malformed recipes and command lines: every one is refused with exit code 2 and a message naming
the offending dotted key, and the output folder, which holds a previous finished run, is left
byte-identical (issue 11).

The cases are generated from tables: wrong types and out-of-range values for every section
(run, task, model, training, a stage's overrides, evaluation, the measurements), bad stage shapes
and names, unknown keys, duplicate YAML keys, and a ``max_position_embeddings`` shorter than the
corpus's sequences (the one check that needs the corpus; it builds the tiny corpus only).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import TINY_RECIPE

from iml_hf import train
from iml_hf.config.args import RunArguments

ENTITIES_RECIPE = {
    "output_dir": "OVERRIDE",
    "task": {"name": "entities", "num_entities": 40},
    "model": {"num_layers": 1, "hidden_size": 16, "num_heads": 2},
    "stages": [{"name": "s1", "train_subsets": ["qd1consis"], "max_steps": 1}],
}


@dataclasses.dataclass
class Case:
    """One malformed input: extra ``argv`` for the recipe, an ``edit`` of the recipe mapping, or
    the recipe's raw ``text``; ``key`` must appear in the message."""

    id: str
    key: str
    argv: tuple[str, ...] = ()
    edit: Callable[[dict], None] | None = None
    text: str | None = None
    base: dict = dataclasses.field(default_factory=lambda: TINY_RECIPE)
    needs_corpus: bool = False


def _cli(key: str, value: str, base: dict = TINY_RECIPE, what: str = "") -> Case:
    return Case(f"{what}{key}={value}", key, argv=(f"--{key}={value}",), base=base)


# ---- wrong types: the value is not what the field's type says ------------------------------------
WRONG_TYPES = [
    ("seed", "abc"),
    ("seed", "1.5"),
    ("save_model", "maybe"),
    ("torch_threads", "many"),
    ("push_to_hub", "2"),
    ("task.modulus", "big"),
    ("task.pretrain_fraction", "most"),
    ("task.operation", "[mul]"),
    ("model.num_layers", "two"),
    ("model.num_layers", "2.5"),
    ("model.hidden_size", "[128]"),
    ("model.dropout", "none_please"),
    ("model.tie_word_embeddings", "2"),
    ("model.config_overrides", "[1]"),
    ("model.attention_only", "sometimes"),
    ("training.learning_rate", "fast"),
    ("training.learning_rate", "["),
    ("training.max_steps", "ten"),
    ("training.per_device_train_batch_size", "1.5"),
    ("training.bf16", "maybe"),
    ("training.report_to", "[1]"),
    ("training.lr_scheduler_type", "cosinus"),
    ("training.optim", "adamw"),
    ("training.weight_decay", "{a: 1}"),
    ("stages.x1.max_steps", "4.5"),
    ("stages.x1.replay", "[pretrain]"),
    ("stages.x1.replay", "{pretrain: half}"),
    ("stages.x1.train_subsets", "{x1t: 1}"),
    ("stages.x2.reset_optimizer", "perhaps"),
    ("stages.x2.learning_rate", "slow"),
    ("evaluation.eval_steps", "often"),
    ("evaluation.monitor_train", "sometimes"),
    ("evaluation.subsets", "{x2t: 1}"),
    ("gradient_alignment.enabled", "perhaps"),
    ("gradient_alignment.interval", "1.5"),
    ("embedding_geometry.plots", "7"),
    ("layer_analysis.max_final_loss", "low"),
]

# ---- values of the right type outside their range ------------------------------------------------
OUT_OF_RANGE = [
    ("seed", "-1"),
    ("torch_threads", "0"),
    ("task.modulus", "4"),
    ("task.modulus", "10"),
    ("task.pretrain_fraction", "1.5"),
    ("task.x1_test_fraction", "0"),
    ("task.definition_repeats", "0"),
    ("task.aliases_per_number", "0"),
    ("task.operation", "pow"),
    ("model.num_layers", "0"),
    ("model.num_heads", "0"),
    ("model.hidden_size", "-128"),
    ("model.hidden_size", "15"),
    ("model.max_position_embeddings", "0"),
    ("model.intermediate_size", "0"),
    ("model.dropout", "1.0"),
    ("model.dropout", "-0.1"),
    ("model.architecture", "gpt3"),
    ("model.dtype", "float16"),
    ("training.learning_rate", "0"),
    ("training.learning_rate", "-1e-3"),
    ("training.learning_rate", ".inf"),
    ("training.max_steps", "0"),
    ("training.max_steps", "-3"),
    ("training.num_train_epochs", "0"),
    ("training.per_device_train_batch_size", "0"),
    ("training.per_device_eval_batch_size", "0"),
    ("training.gradient_accumulation_steps", "0"),
    ("training.warmup_steps", "-1"),
    ("training.weight_decay", "-0.1"),
    ("training.adam_beta1", "1.0"),
    ("training.max_grad_norm", "-1"),
    ("training.logging_steps", "0"),
    ("stages.x1.max_steps", "0"),
    ("stages.x1.max_steps", "-2"),
    ("stages.x2.learning_rate", "0.0"),
    ("stages.x1.per_device_train_batch_size", "0"),
    ("stages.x1.replay", "{pretrain: 1.5}"),
    ("stages.x1.train_subsets", "[]"),
    ("stages.x1.train_subsets", "[x1true]"),
    ("stages.x1.train_kinds", "[defintion]"),
    ("evaluation.batch_size", "0"),
    ("evaluation.eval_steps", "-1"),
    ("evaluation.max_examples_per_subset", "0"),
    ("evaluation.subsets", "[x2true]"),
    ("evaluation.subsets", "x2t,x2true"),
    ("stages.x1.train_subsets", "x1t,x1true"),
    ("gradient_alignment.interval", "-1"),
    ("gradient_alignment.aliases_per_subset", "0"),
    ("gradient_alignment.method", "loop"),
    ("gradient_alignment.interval_strategy", "epochs"),
    ("embedding_geometry.interval", "-5"),
    ("layer_analysis.max_tokens", "0"),
    ("layer_analysis.min_position", "-1"),
    ("layer_analysis.split", "validation"),
]

# ---- the entities task's values ---------------------------------------------------------------
ENTITIES = [
    ("task.fraction_q", "-0.1"),
    ("task.fraction_qd1consis", "1.5"),
    ("task.alpha", "2"),
    ("task.test_fraction", "1"),
    ("task.num_entities", "0"),
    ("task.tags", "[a, a, b]"),
    ("task.def_order", "tvv"),
    ("task.knowledge", "maybe"),
    ("task.subset_seed", "-1"),
    ("task.values_per_relation", "0"),
    ("task.sources", "rumours"),
    ("task.knowledge_base", "wikidata"),
]


def _stage(i: int, **changes):
    def edit(recipe):
        recipe["stages"][i].update(changes)

    return edit


def _as_mapping(recipe):
    recipe["stages"] = {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in recipe["stages"]}


# ---- the shape of the recipe: stages, sections, unknown keys ---------------------------------
SHAPES = [
    Case("stages-as-mapping", "stages", edit=_as_mapping),
    Case("stages-a-string", "stages", edit=lambda r: r.update(stages="pretrain")),
    Case("stage-not-a-mapping", "stages[1]", edit=lambda r: r["stages"].__setitem__(1, "x1")),
    Case("stage-name-dot", "stages[0].name", edit=_stage(0, name="pre.train")),
    Case("stage-name-slash", "stages[0].name", edit=_stage(0, name="pre/train")),
    Case("stage-name-space", "stages[0].name", edit=_stage(0, name="pre train")),
    Case("stage-name-empty", "stages[0].name", edit=_stage(0, name="")),
    Case("stage-name-number", "stages[0].name", edit=_stage(0, name=3)),
    Case("stage-name-duplicate", "stages[1].name", edit=_stage(1, name="pretrain")),
    Case("stage-name-missing", "stages[2].name", edit=lambda r: r["stages"][2].pop("name")),
    Case("stage-subsets-missing", "stages.x1.train_subsets", edit=lambda r: r["stages"][1].pop("train_subsets")),
    Case("stage-unknown-key", "stages.x1.max_steps", edit=_stage(1, max_step=3)),
    Case("stage-reserved-key", "stages.x1.output_dir", edit=_stage(1, output_dir="elsewhere")),
    Case("model-not-a-mapping", "model", edit=lambda r: r.update(model=[1, 2])),
    Case("training-not-a-mapping", "training", edit=lambda r: r.update(training=5)),
    Case("task-name-a-list", "task.name", edit=lambda r: r["task"].update(name=["modmul"])),
    Case("task-name-unknown", "task.name", edit=lambda r: r["task"].update(name="modmull")),
    Case("unknown-model-key", "model.num_layers", edit=lambda r: r["model"].update(num_layer=2)),
    Case("unknown-top-key", "seed", edit=lambda r: r.update(sead=1)),
    Case("reserved-training-key", "training.seed", edit=lambda r: r["training"].update(seed=3)),
    Case("unknown-cli-key", "training.learning_rate", argv=("--trainig.learning_rate=1e-3",)),
    Case("checkpoint-key-without-checkpoint", "model.revision", argv=("--model.revision=main",)),
    Case("yaml-bool-for-int", "model.num_layers", edit=lambda r: r["model"].update(num_layers=True)),
    Case("yaml-string-for-float", "training.learning_rate", edit=lambda r: r["training"].update(learning_rate="3e-3x")),
    Case("yaml-list-for-int", "evaluation.eval_steps", edit=lambda r: r["evaluation"].update(eval_steps=[3])),
]

# ---- a key given twice in one YAML mapping ----------------------------------------------------
_STAGES_TEXT = "stages:\n  - name: s\n    train_subsets: [pretrain]\n    max_steps: 1\n"
DUPLICATES = [
    Case("dup-seed", "seed", text="seed: 1\nseed: 2\ntask: {name: modmul}\n" + _STAGES_TEXT),
    Case(
        "dup-model-key",
        "model.num_layers",
        text="task: {name: modmul}\nmodel:\n  num_layers: 1\n  num_layers: 2\n" + _STAGES_TEXT,
    ),
    Case("dup-task-key", "task.modulus", text="task:\n  name: modmul\n  modulus: 8\n  modulus: 12\n" + _STAGES_TEXT),
    Case(
        "dup-training-key",
        "training.learning_rate",
        text="task: {name: modmul}\ntraining:\n  learning_rate: 1e-3\n  learning_rate: 1e-2\n" + _STAGES_TEXT,
    ),
    Case("dup-stage-key", "stages.s.max_steps", text="task: {name: modmul}\n" + _STAGES_TEXT + "    max_steps: 2\n"),
    Case(
        "dup-section",
        "model",
        text="task: {name: modmul}\nmodel: {num_layers: 1}\nmodel: {num_layers: 2}\n" + _STAGES_TEXT,
    ),
]

CASES = [
    *(_cli(k, v, what="type:") for k, v in WRONG_TYPES),
    *(_cli(k, v, what="range:") for k, v in OUT_OF_RANGE),
    *(_cli(k, v, ENTITIES_RECIPE, what="entities:") for k, v in ENTITIES),
    *SHAPES,
    *DUPLICATES,
    Case(
        "positions-shorter-than-sequences",
        "model.max_position_embeddings",
        argv=("--model.max_position_embeddings=3",),
        needs_corpus=True,
    ),
]


def test_there_are_enough_cases():
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` -> the sha256 of its bytes ("dir" for a folder)."""
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """A fake finished run: results.json, metrics.jsonl, an embeddings/ and a layers/ file, weights."""
    run = tmp_path / "runs" / "previous"
    (run / "embeddings").mkdir(parents=True)
    (run / "layers").mkdir()
    (run / "results.json").write_text(json.dumps({"final_em": {"x2t": 0.5}, "stages": {}}))
    (run / "metrics.jsonl").write_text('{"step": 1, "em": 0.25}\n{"step": 2, "em": 0.5}\n')
    (run / "embeddings" / "x2_step4.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (run / "layers" / "x2.json").write_text('{"layers": [1, 2]}')
    (run / "model.safetensors").write_bytes(bytes(1024))
    return run


def _recipe_file(tmp_path: Path, case: Case, output_dir: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    if case.text is not None:
        path.write_text(f"output_dir: {output_dir}\n{case.text}")
        return path
    recipe = copy.deepcopy({**case.base, "output_dir": str(output_dir)})
    if case.edit:
        case.edit(recipe)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_malformed_recipe_exits_2_naming_the_key(case, tmp_path, finished_run, capsys):
    path = _recipe_file(tmp_path, case, finished_run)
    extra = ()
    if case.needs_corpus and "overwrite_output_dir" in {f.name for f in dataclasses.fields(RunArguments)}:
        extra = ("--overwrite_output_dir=true",)  # the user means to replace the previous run
    siblings = sorted(p.name for p in finished_run.parent.iterdir())
    before = _snapshot(finished_run)
    with pytest.raises(SystemExit) as exit_info:
        train.main([str(path), *case.argv, *extra])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("iml_hf.train: error: ") and "Traceback" not in err
    assert case.key in err, err
    assert _snapshot(finished_run) == before
    after = sorted(p.name for p in finished_run.parent.iterdir())
    if case.needs_corpus:  # the run's lock file may lie beside the folder; no work folder does
        assert not (finished_run.parent / f"{finished_run.name}.partial").exists()
    else:
        assert after == siblings  # parse-time errors write nothing at all


def test_positions_error_says_the_longest_sequence_and_the_fix(tmp_path, finished_run, capsys):
    case = next(c for c in CASES if c.needs_corpus)
    path = _recipe_file(tmp_path, case, tmp_path / "fresh")
    with pytest.raises(SystemExit):
        train.main([str(path), "--model.max_position_embeddings=3"])
    err = capsys.readouterr().err
    assert "model.max_position_embeddings=3 is not valid" in err
    assert "longest sequence" in err and "--model.max_position_embeddings=" in err
    assert not (tmp_path / "fresh").exists()


@pytest.mark.parametrize(
    "argv_tail, key",
    [
        (["--training.learning_rate=fast"], "training.learning_rate='fast'"),
        (["--save_model=maybe"], "save_model='maybe'"),
    ],
)
def test_command_line_errors_in_a_subprocess(tmp_path, finished_run, argv_tail, key):
    path = _recipe_file(tmp_path, Case("x", "x"), finished_run)
    before = _snapshot(finished_run)
    done = subprocess.run([sys.executable, "-m", "iml_hf.train", str(path), *argv_tail], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert key in done.stderr and "Traceback" not in done.stderr
    assert _snapshot(finished_run) == before
