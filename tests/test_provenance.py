"""Provenance: versions, the checkout's commit, date and command line, with nothing identifying."""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from conftest import TINY_RECIPE

from iml_hf.utils import provenance as prov
from iml_hf.utils.provenance import REDACTED, command_line, git_state, provenance, redact

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "iml_hf" / "train.py")  # sys.argv[0] under python -m iml_hf.train (and accelerate launch -m)


def test_secret_values_are_redacted_in_both_forms():
    argv = [
        "r.yaml",
        "--training.hub_token=hf_abc",
        "--hub_token",
        "hf_def",
        "--wandb-api-key=k1",
        "--PASSWORD",
        "pw",
        "--seed=3",
        "--model.tokenizer_name_or_path=gpt2",
        "--task.add_task_tokens=true",
        "--training.max_new_tokens=4",
    ]
    assert redact(argv) == [
        "r.yaml",
        f"--training.hub_token={REDACTED}",
        "--hub_token",
        REDACTED,
        f"--wandb-api-key={REDACTED}",
        "--PASSWORD",
        REDACTED,
        "--seed=3",
        "--model.tokenizer_name_or_path=gpt2",
        "--task.add_task_tokens=true",
        "--training.max_new_tokens=4",
    ]  # tokenizer/tokens: words of their own, no secrets
    assert redact(["--hub_token", "--seed=1"]) == ["--hub_token", "--seed=1"]  # a flag with no value hides nothing


def test_command_line_names_the_module_not_the_path_and_hides_the_home_folder():
    home = str(Path.home())
    argv = [TRAIN, "recipes/toy.yaml", f"--output_dir={home}/runs/toy", "--evaluation.subsets=[x2t, x2f]"]
    assert (
        command_line(argv)
        == "python -m iml_hf.train recipes/toy.yaml --output_dir=~/runs/toy '--evaluation.subsets=[x2t, x2f]'"
    )
    assert command_line([str(ROOT / "iml_hf" / "__main__.py"), "train"]) == "python -m iml_hf train"
    assert command_line(["/somewhere/venv/bin/iml-train", "r.yaml"]) == "iml-train r.yaml"
    assert command_line(["/usr/lib/python3/site-packages/ipykernel_launcher.py", "-f", "k.json"]) is None
    assert command_line([]) is None


def test_provenance_fields_and_nothing_identifying(monkeypatch):
    monkeypatch.setenv("IML_TEST_SECRET", "s3cr3t-value")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    made = provenance([TRAIN, "r.yaml", "--training.hub_token=hf_secret"])
    assert set(made) == {"versions", "git", "date", "command", "invoked"}
    assert set(made["versions"]) == {
        "python",
        "iml_hf",
        "torch",
        "transformers",
        "datasets",
        "accelerate",
        "tokenizers",
        "huggingface_hub",
    }
    assert made["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert before <= datetime.fromisoformat(made["date"]) <= before + timedelta(minutes=1)
    assert made["date"].endswith("+00:00")
    assert (made["command"], made["invoked"]) == (
        f"python -m iml_hf.train r.yaml --training.hub_token={REDACTED}",
        "command line",
    )
    text = json.dumps(made)
    assert "hf_secret" not in text and "s3cr3t-value" not in text and socket.gethostname() not in text
    user = getpass.getuser()
    assert len(user) < 3 or user not in text.replace("iml_hf", "")
    assert provenance(["pytest", "tests"])["invoked"] == "Python API"


def test_git_commit_and_dirty_flag_of_a_checkout_and_none_elsewhere(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    (repo / "iml_hf").mkdir(parents=True)
    (repo / "iml_hf" / "x.py").write_text("a = 1\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    assert git_state(repo) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (repo / "iml_hf" / "x.py").write_text("a = 2\n")
    assert git_state(repo)["dirty"] is True
    (repo / "notes.txt").write_text("untracked files do not count\n")
    git("checkout", "-q", "--", "iml_hf/x.py")
    assert git_state(repo)["dirty"] is False
    assert git_state(repo / "iml_hf") is None  # inside another project's checkout: not iml_hf's commit
    assert git_state(tmp_path / "nowhere") is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git at all
    assert git_state(repo) is None


def test_a_run_from_the_command_line_records_its_provenance(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        yaml.safe_dump({**TINY_RECIPE, "output_dir": str(tmp_path / "run"), "stages": TINY_RECIPE["stages"][:1]})
    )
    done = subprocess.run(
        [sys.executable, "-m", "iml_hf.train", str(path), "--seed=0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    made = json.loads((tmp_path / "run" / "results.json").read_text())["provenance"]
    assert made["command"] == f"python -m iml_hf.train {path} --seed=0"  # the recipe refuses hub_token: see redact
    assert made["invoked"] == "command line" and made["versions"]["iml_hf"] == prov.library_versions()["iml_hf"]
    if git_state() is not None:  # a checkout (this repository): its commit
        assert len(made["git"]["commit"]) == 40 and isinstance(made["git"]["dirty"], bool)
