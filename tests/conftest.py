"""Shared fixtures: a tiny modmul corpus, its tokenizer and a tiny recipe, all built in the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from iml_hf.data.tokenization import build_wordlevel_tokenizer
from iml_hf.tasks.modmul import ModMulTask

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test session caches corpora in its own temporary directory."""
    monkeypatch.setenv("IML_HF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_task() -> ModMulTask:
    return ModMulTask(modulus=8, aliases_per_number=2, definition_repeats=2)


@pytest.fixture(scope="session")
def tiny_corpus(tiny_task):
    return tiny_task.build(seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_corpus):
    return build_wordlevel_tokenizer(tiny_corpus)


TINY_RECIPE = {
    "output_dir": "OVERRIDE",
    "seed": 0,
    "torch_threads": 1,
    "task": {"name": "modmul", "modulus": 8, "aliases_per_number": 2, "definition_repeats": 2},
    "model": {"architecture": "gpt2", "num_layers": 1, "hidden_size": 16, "num_heads": 2},
    "training": {
        "per_device_train_batch_size": 16,
        "learning_rate": "3e-3",
        "logging_steps": 5,
        "disable_tqdm": True,
    },
    "evaluation": {"eval_steps": 3},
    "stages": [
        {"name": "pretrain", "train_subsets": ["pretrain"], "max_steps": 6},
        {"name": "x1", "train_subsets": ["x1t", "x1f"], "replay": {"pretrain": 0.5}, "max_steps": 4},
        {"name": "x2", "train_subsets": ["x2t", "x2f"], "max_steps": 4, "learning_rate": 1.0e-3},
    ],
}


@pytest.fixture
def tiny_recipe(tmp_path) -> Path:
    """A tiny three-stage recipe file whose output_dir lies in the test's temporary directory."""
    recipe = {**TINY_RECIPE, "output_dir": str(tmp_path / "run")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def build_tiny_model(tokenizer, architecture: str = "gpt2", seed: int = 0, **overrides):
    """A 2-layer, width-16 model with weights moved off their initial values (so no gradient is
    trivially zero or symmetric)."""
    from iml_hf.config.args import ModelArguments
    from iml_hf.models.modeling import build_model

    torch.manual_seed(seed)
    args = {"architecture": architecture, "num_layers": 2, "hidden_size": 16, "num_heads": 2, **overrides}
    model = build_model(ModelArguments(**args), tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return model


def loop_gradients(model, batch) -> dict:
    """Reference per-example gradients: ``loss.backward()`` at batch size 1 on the unpadded example,
    in eval mode, with the model's own loss. Name -> (N, *shape)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    model.eval()
    out = {n: [] for n in params}
    for ids, labels in zip(batch.input_ids, batch.labels):
        keep = int(labels.ne(-100).nonzero().max()) + 1
        model.zero_grad(set_to_none=True)
        model(input_ids=ids[None, :keep], labels=labels[None, :keep]).loss.backward()
        for n, p in params.items():
            out[n].append(p.grad.clone())
    model.zero_grad(set_to_none=True)
    return {n: torch.stack(v) for n, v in out.items()}


def run_recipe(monkeypatch, tmp_path, **changes) -> tuple[dict, Path]:
    """Run ``TINY_RECIPE`` with ``changes`` (top-level keys replaced) through ``iml_hf.train.main``
    with a patched argv; returns the results and the recipe file."""
    import sys

    from iml_hf import train

    recipe = {**TINY_RECIPE, "output_dir": str(tmp_path / "run"), **changes}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(path)])
    return train.main(), path


def kill_train_when(argv: list[str], ready, timeout: float = 300) -> None:
    """Start ``python -m iml_hf.train ARGV`` (one thread) and SIGKILL it as soon as ``ready()`` is true."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "iml_hf.train", *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the run never got to the point to kill it"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


#: Every entity in d1consis: all its questions held out, its facts trained by name (knowledge).
ALL_D1 = dict(
    fraction_q_no_replacement_baseline=0.0,
    fraction_qd1consis=0.0,
    fraction_qd2incons=0.0,
    fraction_q=0.0,
    fraction_d1consis=1.0,
    fraction_d2consis=0.0,
    fraction_no_qd_baseline=0.0,
)


def all_d1_entities_task(knowledge_base: str, path, **overrides):
    """An entity task on a knowledge-base file with every entity in d1consis."""
    from iml_hf.tasks.entities import EntitiesTask

    return EntitiesTask(
        **{"knowledge_base": knowledge_base, "kb_path": str(path), "qa_format": "{question}", **ALL_D1, **overrides}
    )
