"""Several processes: two CPU processes started by accelerate's launcher against one process, the
launch checks, EM scoring under sharded parameters (FSDP2 on CPU), and the accelerate configs."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import TINY_RECIPE
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> str:
    """A free local port for the rendezvous (several test sessions may run at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def _leaves(tree: Any, path: str = "") -> dict[str, float]:
    """Every number in a nested dict, by its slash-joined path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{path}/{key}").items()}
    return {path: float(tree)} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


def _largest_gap(a: dict[str, float], b: dict[str, float]) -> float:
    """The largest |a - b| over the same keys (NaN where both are NaN counts as equal)."""
    assert set(a) == set(b)
    return max((0.0 if math.isnan(a[k]) and math.isnan(b[k]) else abs(a[k] - b[k]) for k in a), default=0.0)


def test_accelerate_gives_two_ranks_the_two_halves_of_each_global_batch():
    """The data-order claim the comparison below rests on, checked on accelerate's own sharding
    (what the Trainer's ``accelerator.prepare(DataLoader(..., sampler=RandomSampler))`` does, with
    the seedable sampler the Trainer turns on): with ``drop_last`` the two ranks' batches of 8 at
    each step are exactly the one-process batch of 16; without it the short batch at an epoch's end
    differs (two processes top it up with the epoch's first examples)."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader, RandomSampler

    def steps(batch_size: int, processes: int, rank: int, drop_last: bool) -> list[list[int]]:
        torch.manual_seed(0)  # the Trainer's set_seed: the sampler's seed is torch's initial seed
        data = list(range(58))  # the tiny corpus's pretraining rows
        loader = prepare_data_loader(
            DataLoader(data, batch_size=batch_size, sampler=RandomSampler(data), drop_last=drop_last),
            num_processes=processes,
            process_index=rank,
            put_on_device=False,
            use_seedable_sampler=True,
        )
        out = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            out += [sorted(batch.tolist()) for batch in loader]
        return out

    one = steps(16, 1, 0, drop_last=True)
    two = [sorted(a + b) for a, b in zip(steps(8, 2, 0, True), steps(8, 2, 1, True))]
    assert len(one) == 6 and one == two
    one = steps(16, 1, 0, drop_last=False)
    two = [sorted(a + b) for a, b in zip(steps(8, 2, 0, False), steps(8, 2, 1, False))]
    assert [a == b for a, b in zip(one, two)] == [True, True, True, False] * 2


def test_two_processes_match_one_process(monkeypatch, tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2 ... --training.use_cpu=true`` (two gloo
    processes; ``accelerate launch --cpu --num_processes 2`` starts one process only, as its simple
    launcher does without mpirun) against one process of the same recipe with every measurement on.

    Global batch 16 = 2 x 8 = 1 x 16 and ``dataloader_drop_last``, so every optimizer step sees the
    same examples (the test above); the Trainer normalises the loss by the tokens of the global
    batch (``average_tokens_across_devices``), so the gradients are the same sums in another order.
    Tolerances, against measured gaps on this machine: EM within one example per set (measured
    equal), answer loss 1e-4 (measured < 1e-5), train_loss 1e-5 relative (measured 1e-7), mechanism
    values 1e-4 (measured 2e-6), weights 1e-3 (measured 1.2e-4 after 38 Adam steps). One process
    with another sampling order (``--training.data_seed=1``) differs by 1e-2 to 0.15 in answer
    loss, 0.24 in weights and up to 1.7 in alignment cosines, so these bounds catch a changed data
    order, a lost shard or a loss averaged over the wrong count. About 35 s on 2 cores.
    """
    from iml_hf import train
    from iml_hf.config import parse_recipe
    from iml_hf.data.corpus import load_or_build_corpus
    from iml_hf.data.tokenization import encode_rows
    from iml_hf.measure.exact_match import exact_match

    recipe = {
        **TINY_RECIPE,
        "output_dir": str(tmp_path / "one"),
        "training": {**TINY_RECIPE["training"], "dataloader_drop_last": True, "use_cpu": True},
        "evaluation": {"eval_steps": 10},
        "stages": [{**TINY_RECIPE["stages"][0], "max_steps": 30, "learning_rate": 1.0e-2}, *TINY_RECIPE["stages"][1:]],
        "gradient_alignment": {"enabled": True, "interval": 10, "aliases_per_subset": 4, "questions_per_alias": 2},
        "embedding_geometry": {"enabled": True, "interval": 10, "plots": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["iml_hf.train", str(path)])
    one = train.main()

    out = tmp_path / "two"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            _free_port(),
            "-m",
            "iml_hf.train",
            str(path),
            f"--output_dir={out}",
            "--training.per_device_train_batch_size=8",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((out / "results.json").read_text())
    assert (one["processes"], two["processes"]) == (1, 2)
    assert done.stdout.count("exact match at the end of each stage") == 1  # the summary, from the main process only

    test = load_or_build_corpus(parse_recipe([str(path)]).task, 0)["test"]
    sizes = Counter(test["subset"])
    for stage in ("pretrain", "x1", "x2"):
        a, b = one["stages"][stage], two["stages"][stage]
        assert a["steps"] == b["steps"] and set(a["em"]) == set(b["em"]) == set(sizes)
        for name in sizes:
            assert abs(a["em"][name] - b["em"][name]) <= 1 / sizes[name] + 1e-12, (stage, name)
            assert abs(a["metrics"][name]["loss"] - b["metrics"][name]["loss"]) <= 1e-4, (stage, name)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        for key in ("grad_align", "embedding"):
            assert _leaves(b[key]) and _largest_gap(_leaves(a[key]), _leaves(b[key])) <= 1e-4, (stage, key)
    assert (
        0 < one["stages"]["pretrain"]["em"]["x1t"] < 1
    )  # EM somewhere strictly inside (0, 1): a lost shard would show

    weights_one, weights_two = load_file(tmp_path / "one" / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(weights_one) == set(weights_two)
    assert max(float((weights_one[k] - weights_two[k]).abs().max()) for k in weights_one) <= 1e-3

    # metrics.jsonl and the embedding matrices: written once, by the main process, at the same points
    rows = {
        run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("one", "two")
    }
    keys = {run: [(r["stage"], r["stage_step"], r["name"]) for r in rows[run]] for run in rows}
    assert len(keys["two"]) == len(set(keys["two"])) and sorted(keys["one"]) == sorted(keys["two"])
    assert {r["family"] for r in rows["two"]} == {"eval", "grad_align", "grad_align_mean", "embedding", "train"}
    values = {run: {k: r["value"] for k, r in zip(keys[run], rows[run]) if r["metric"] != "em"} for run in rows}
    assert _largest_gap(values["one"], values["two"]) <= 1e-4
    assert sorted(p.name for p in (out / "embeddings").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "embeddings").iterdir()
    )

    # the saved two-process model reproduces the final EM, so no shard of any set was lost or counted twice
    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    for subset in sizes:
        rows_of = test.filter(lambda r: r["subset"] == subset)  # noqa: B023
        encoded = encode_rows(tokenizer, list(rows_of["prompt"]), list(rows_of["answer"]))
        correct = exact_match(model, encoded["prompt_ids"], encoded["answer_ids"], tokenizer.pad_token_id)
        assert two["final_em"][subset] == sum(correct) / len(correct)


def _tiny_recipe(tmp_path: Path, **changes: Any):
    from iml_hf.config import parse_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "output_dir": str(tmp_path / "run"), **changes}))
    return parse_recipe([str(path)])


class _State:
    """Stands in for accelerate's PartialState in the launch checks."""

    def __init__(self, num_processes: int):
        self.num_processes = num_processes


def test_processes_that_did_not_join_one_group_are_refused(monkeypatch, tmp_path):
    """Two processes launched on a machine without GPUs and without use_cpu each see one process:
    refused, instead of two runs writing into one folder."""
    from iml_hf.config import RecipeError
    from iml_hf.training.pipeline import check_launch

    recipe = _tiny_recipe(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RecipeError, match="use_cpu=true"):
        check_launch(recipe, _State(1))
    check_launch(recipe, _State(2))
    monkeypatch.delenv("WORLD_SIZE")
    check_launch(recipe, _State(1))


def test_main_process_measurements_are_refused_under_fsdp(monkeypatch, tmp_path):
    """Under FSDP (accelerate's launcher, or training.fsdp) the measurements that read whole
    parameters on the main process alone are refused, naming the flags that switch them off."""
    from iml_hf.config import RecipeError
    from iml_hf.training.pipeline import check_launch

    measured = _tiny_recipe(tmp_path, gradient_alignment={"enabled": True}, embedding_geometry={"enabled": True})
    plain = _tiny_recipe(tmp_path)
    check_launch(measured, _State(1))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RecipeError, match="--gradient_alignment.enabled=false --embedding_geometry.enabled=false"):
        check_launch(measured, _State(1))
    check_launch(plain, _State(1))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")  # ZeRO-2 keeps whole parameters on every process
    check_launch(measured, _State(1))
    with pytest.raises(RecipeError, match="FSDP shards"):
        check_launch(
            _tiny_recipe(
                tmp_path,
                embedding_geometry={"enabled": True},
                training={**TINY_RECIPE["training"], "fsdp": "full_shard"},
            ),
            _State(1),
        )


def _sharded_eval_worker(out: str) -> None:
    """One of the two torchrun processes of the FSDP2 test: scores token and text EM and the
    answer loss with SubsetEMCallback on a model sharded by ``fully_shard`` and writes what it got
    next to the one-process reference computed with the whole model before sharding."""
    from datetime import timedelta
    from types import SimpleNamespace

    from accelerate import PartialState
    from conftest import build_tiny_model
    from datasets import Dataset
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import TrainerState

    from iml_hf.data.tokenization import build_wordlevel_tokenizer, tokenize_corpus
    from iml_hf.measure.callbacks.subset_em import SubsetEMCallback, answer_losses
    from iml_hf.measure.exact_match import exact_match, greedy_continuations, parameters_sharded
    from iml_hf.measure.qa_match import generate_answers, score_answers
    from iml_hf.tasks.modmul import ModMulTask
    from iml_hf.utils.io import MetricsLog

    state = PartialState(cpu=True, timeout=timedelta(seconds=60))  # a hang fails within a minute
    torch.set_num_threads(1)
    corpus = ModMulTask(modulus=8, aliases_per_number=2, definition_repeats=2).build(seed=0)
    tokenizer = build_wordlevel_tokenizer(corpus)
    model = build_tiny_model(tokenizer)  # the same weights in both processes (seeded)
    test = tokenize_corpus(corpus, tokenizer)["test"].select(range(13))
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompt_ids, corpus_answers = list(test["prompt_ids"]), list(test["answer"])
    own = greedy_continuations(
        model, prompt_ids, 3, pad, eos
    )  # what the model answers (3 tokens: text EM decodes 2 + 1)
    # two-token answers in the first process's share, one-token ones in the second's (so the two
    # would make different calls if answers were routed by length); every third answer is wrong
    answer_ids = [own[i][: 2 if i < 7 else 1] for i in range(len(test))]
    for i in range(2, len(test), 3):
        answer_ids[i] = [(answer_ids[i][0] + 1) % len(tokenizer), *answer_ids[i][1:]]
    answers = [
        corpus_answers[i] if i % 3 == 2 else tokenizer.decode(own[i], skip_special_tokens=True).strip()
        for i in range(len(test))
    ]
    token_set = Dataset.from_dict(
        {
            "prompt_ids": prompt_ids,
            "answer_ids": answer_ids,
            "input_ids": list(test["input_ids"]),
            "labels": list(test["labels"]),
        }
    )
    sets = {"mixed": token_set, "one": token_set.select([0])}  # "one": a set smaller than the processes
    text_set = token_set.add_column("answer", answers)
    reference = {}
    for name, rows in sets.items():
        losses = answer_losses(model, list(rows["input_ids"]), list(rows["labels"]), pad, 64)
        correct = exact_match(model, list(rows["prompt_ids"]), list(rows["answer_ids"]), pad, eos)
        reference[name] = {"em": sum(correct) / len(correct), "loss": sum(losses) / len(losses)}
    predictions = generate_answers(model, tokenizer, prompt_ids, 3)  # SubsetEM: the set's longest answer + 1
    text = score_answers(predictions, answers)
    reference["text"] = {k: sum(v) / len(v) for k, v in text.items()}

    mesh = init_device_mesh("cpu", (state.num_processes,))
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    trainer = SimpleNamespace(
        processing_class=tokenizer,
        model=model,
        log=lambda logs: None,
        position=lambda state: {"stage": "s", "stage_index": 0, "stage_step": 0, "global_step": 0, "epoch": 0},
    )
    log = MetricsLog(Path(out) / "metrics.jsonl", enabled=False)
    token_em = SubsetEMCallback(trainer, sets, log, batch_size=4)  # several batches per process
    text_em = SubsetEMCallback(trainer, {"text": text_set}, log, batch_size=4, answer_match="text", loss=False)
    token_em.measure(TrainerState())
    text_em.measure(TrainerState())
    if state.is_main_process:
        block = model.transformer.h[0].attn.c_attn.weight  # blocks are resharded after each forward
        Path(out, "sharded.json").write_text(
            json.dumps(
                {
                    "sharded": parameters_sharded(model),
                    "rows_here": block.to_local().shape[0],
                    "rows": block.shape[0],
                    "reference": reference,
                    "measured": {**token_em.latest_metrics, **text_em.latest_metrics},
                }
            )
        )
    state.wait_for_everyone()
    state.destroy_process_group()  # gloo's threads outliving the interpreter abort a rank now and then


def test_em_and_answer_loss_under_fsdp2_sharded_parameters(tmp_path):
    """Two CPU processes shard a tiny GPT-2 with FSDP2 (``fully_shard``, gloo; accelerate itself
    allows FSDP on GPUs only) and score EM and answer loss through SubsetEMCallback: every forward
    is then a collective, so each process must make the same calls even for a one-example set and
    a mix of one- and two-token answers; the results equal one process's with the whole model."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            _free_port(),
            __file__,
            "sharded-eval",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "sharded.json").read_text())
    assert result["sharded"] and result["rows_here"] == result["rows"] // 2  # really sharded
    reference, measured = result["reference"], result["measured"]
    assert set(measured) == {"mixed", "one", "text"}
    for name in measured:
        assert measured[name]["em"] == reference[name]["em"], name
        for key in set(measured[name]) - {"em"}:
            assert measured[name][key] == pytest.approx(reference[name][key], abs=1e-5), (name, key)
    assert 0 < reference["mixed"]["em"] < 1 and 0 < reference["text"]["em"] < 1


def test_every_accelerate_config_loads_and_resolves(monkeypatch):
    """Every file under accelerate_configs/ loads with accelerate's config loader and resolves
    through ``accelerate launch``'s own argument checks; the FSDP and DeepSpeed files build their
    plugins from the environment the launcher would set (full shard, FSDP2, a full state dict;
    ZeRO-2 with accumulation and clipping left to the recipe)."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    files = sorted((ROOT / "accelerate_configs").glob("*.yaml"))
    assert {f.name for f in files} >= {
        "cpu.yaml",
        "single_gpu.yaml",
        "multi_gpu.yaml",
        "fsdp.yaml",
        "deepspeed_zero2.yaml",
    }
    environments = {}
    for file in files:
        config = load_config_from_file(str(file))
        assert isinstance(config, ClusterConfig), file.name
        args = launch_command_parser().parse_args(
            ["--config_file", str(file), "--main_process_port", "0", "-m", "iml_hf.train", "recipes/toy.yaml"]
        )
        args, defaults, _ = _validate_launch_command(args)
        if config.distributed_type == DistributedType.FSDP:
            environments[file.name] = prepare_multi_gpu_env(args)
        elif config.distributed_type == DistributedType.DEEPSPEED:
            args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
            environments[file.name] = prepare_deepspeed_cmd_env(args)[1]

    for key, value in environments["fsdp.yaml"].items():
        monkeypatch.setenv(key, value)
    fsdp = FullyShardedDataParallelPlugin()
    assert (fsdp.fsdp_version, fsdp.reshard_after_forward, fsdp.state_dict_type.name) == (2, True, "FULL_STATE_DICT")
    assert fsdp.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert environments["fsdp.yaml"]["ACCELERATE_MIXED_PRECISION"] == "bf16"
    for key, value in environments["deepspeed_zero2.yaml"].items():
        monkeypatch.setenv(key, value)
    deepspeed = DeepSpeedPlugin()
    assert deepspeed.zero_stage == 2 and deepspeed.deepspeed_config["zero_optimization"]["stage"] == 2
    assert deepspeed.deepspeed_config["gradient_accumulation_steps"] == "auto"
    assert environments["deepspeed_zero2.yaml"]["ACCELERATE_MIXED_PRECISION"] == "bf16"


if __name__ == "__main__" and sys.argv[1:2] == ["sharded-eval"]:
    _sharded_eval_worker(sys.argv[2])
    # End the rank without C++ static destructors: a gloo or FSDP thread still joinable at interpreter
    # exit aborts the process ("terminate called without an active exception") now and then, under
    # load, after the result is written and the process group destroyed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
