"""The Python API (``import iml_hf``): lazy imports, overrides, exceptions instead of SystemExit, the
docs page's example, and the console scripts' exit codes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import iml_hf
from iml_hf.cli import COMMANDS, exit_code
from iml_hf.config import parse_recipe

ROOT = Path(__file__).parents[1]
TOY = str(ROOT / "recipes" / "toy.yaml")


def test_import_is_light_and_the_api_loads_on_first_use():
    code = (
        "import sys, iml_hf; assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
        "assert callable(iml_hf.load_recipe) and issubclass(iml_hf.RecipeError, ValueError); "
        "assert 'iml_hf.api' in sys.modules; print(sorted(iml_hf.__all__))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for name in ("load_recipe", "build_corpus", "run", "run_sweep", "build_report", "RecipeError"):
        assert name in done.stdout
    with pytest.raises(AttributeError, match="has no attribute 'sweeep'"):
        iml_hf.sweeep  # noqa: B018


def test_overrides_in_every_form_match_the_command_line(tmp_path):
    cli = parse_recipe(
        [
            TOY,
            "--seed=3",
            "--model.num_layers=2",
            "--stages.x1.max_steps=100",
            "--evaluation.subsets=x2t,x2f",
            "--stages.x2.replay={pretrain: 0.2}",
            f"--output_dir={tmp_path}",
        ]
    )
    dotted = iml_hf.load_recipe(
        TOY,
        seed=3,
        output_dir=str(tmp_path),
        **{
            "model.num_layers": 2,
            "stages.x1.max_steps": 100,
            "evaluation.subsets": ["x2t", "x2f"],
            "stages.x2.replay": {"pretrain": 0.2},
        },
    )
    nested = iml_hf.load_recipe(
        Path(TOY),
        seed=3,
        output_dir=str(tmp_path),
        model={"num_layers": 2},
        evaluation={"subsets": ["x2t", "x2f"]},
        stages={"x1": {"max_steps": 100}, "x2": {"replay": {"pretrain": 0.2}}},
    )
    assert dotted.resolved == cli.resolved == nested.resolved
    assert dotted.stages[1].training["max_steps"] == 100 and dotted.stages[2].replay == {"pretrain": 0.2}
    mapping = iml_hf.load_recipe(yaml.safe_load(Path(TOY).read_text()), seed=3)  # a mapping, not a file
    assert mapping.run.seed == 3 and mapping.source is None and mapping.task.modulus == 40


def test_errors_are_exceptions_never_system_exit(tmp_path):
    with pytest.raises(
        iml_hf.RecipeError, match="unknown key 'model.num_layer' in the overrides; did you mean 'model.num_layers'"
    ):
        iml_hf.load_recipe(TOY, **{"model.num_layer": 2})
    with pytest.raises(
        iml_hf.RecipeError,
        match=r"model.num_layers=0 is not valid.*\(in the overrides: "
        r"model.num_layers=0\)",
    ):
        iml_hf.load_recipe(TOY, model={"num_layers": 0})
    with pytest.raises(iml_hf.RecipeError, match=rf"stages.x1.max_step' in {re.escape(str(tmp_path))}"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(Path(TOY).read_text().replace("    max_steps: 6000", "    max_step: 6000"))
        iml_hf.load_recipe(bad)
    with pytest.raises(iml_hf.RecipeError, match="does not exist"):
        iml_hf.load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(TypeError, match="recipe file or a mapping"):
        iml_hf.load_recipe(3)
    with pytest.raises(iml_hf.RecipeError, match="--seeds 0"):  # the sweep's own checks, before anything runs
        iml_hf.run_sweep(TOY, seeds=0, output_dir=tmp_path / "sweep")
    with pytest.raises(iml_hf.RecipeError, match="did you mean '--task.modulus'"):
        iml_hf.run_sweep(TOY, seeds=1, output_dir=tmp_path / "sweep", sets={"task.modulos": [40, 80]})
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(ValueError, match="not a folder of runs"):
        iml_hf.build_report(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no finished runs"):
        iml_hf.build_report(tmp_path)


def _python_blocks(text: str) -> list[str]:
    """The page's ```python blocks, except those that say they are not run by this test."""
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if not b.startswith("# not run")]


def test_the_docs_example_runs(tmp_path):
    blocks = _python_blocks((ROOT / "docs" / "api.md").read_text())
    assert len(blocks) >= 4
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "modmul 40 ['pretrain', 'x1', 'x2']" in out and "num_rows: 4640" in out
    assert re.search(r"^x2 \{'pretrain': [0-9.]+, 'x1t'", out, re.M) and "'iml_gap'" in out
    assert "did you mean 'model.num_layers'" in out and "did you mean 'x2f'" in out
    assert "Saving the dataset" not in out + done.stderr  # quiet unless asked
    assert "Traceback" not in done.stderr


def test_console_scripts_return_exit_codes(tmp_path):
    script = shutil.which("iml-train", path=str(Path(sys.executable).parent))
    assert script, "iml-train is not installed: pip install -e . --no-deps"
    version = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout == "iml_hf 0.1.0\n"
    bad = subprocess.run(
        [script, TOY, "--model.hiden_size=8", f"--output_dir={tmp_path / 'run'}"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "did you mean '--model.hidden_size'" in bad.stderr
    listing = subprocess.run([sys.executable, "-m", "iml_hf"], capture_output=True, text=True, cwd=ROOT)
    assert listing.returncode == 0
    for name in ("train", "sweep", "report", "analyze", "push-corpus"):
        assert re.search(rf"^  {name} +\S", listing.stdout, re.M), name
    assert subprocess.run([sys.executable, "-m", "iml_hf", "trian"], capture_output=True, text=True).returncode == 2


def test_exit_code_of_a_main():
    assert exit_code(lambda argv: {"stages": {}}) == 0  # iml_hf.train.main returns its results
    assert exit_code(lambda argv: 1) == 1
    assert exit_code(lambda argv: (_ for _ in ()).throw(SystemExit(2))) == 2
    assert exit_code(lambda argv: (_ for _ in ()).throw(SystemExit(None))) == 0
    project = (ROOT / "pyproject.toml").read_text()
    for name in COMMANDS:
        assert f'{name} = "iml_hf.cli:{name.removeprefix("iml-").replace("-", "_")}"' in project
