"""Runs a recipe: corpus -> tokenizer -> model -> stages -> metrics.jsonl, results.json, model."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from iml_hf.config import Recipe, RecipeError
from iml_hf.config.hub_keys import hub_repo_id
from iml_hf.data.corpus import corpus_fingerprint, corpus_key
from iml_hf.data.prepare import RunData, eval_sets, prepare_data
from iml_hf.measure.registry import MEASUREMENTS
from iml_hf.models.architectures import architecture_of
from iml_hf.models.modeling import build_model, count_parameters
from iml_hf.reporting.model_card import stage_intervals, write_model_cards
from iml_hf.training.hub import push_run
from iml_hf.training.run_folder import FolderError, RunFolder
from iml_hf.training.stages import TrainedStages, load_stage_weights, train_stages
from iml_hf.training.trainer import IMLTrainer
from iml_hf.utils import console
from iml_hf.utils.io import remove_empty_dirs, write_json_atomic
from iml_hf.utils.provenance import provenance


def mechanism_inputs(recipe: Recipe, tokenized: DatasetDict, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """What each switched-on measurement reads, built once for all stages (the fixed
    gradient-alignment sample, the embedding layout, the layer analysis's sequences)."""
    return {
        name: spec.prepare(recipe, tokenized, tokenizer)
        for name, spec in MEASUREMENTS.items()
        if recipe.measurement_args(name).enabled
    }


def sharded_parameters(recipe: Recipe) -> str | None:
    """What shards the parameters across processes in this launch (FSDP, DeepSpeed ZeRO-3), or None."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" or any(
        {**recipe.training, **stage.training}.get("fsdp") for stage in recipe.stages
    ):
        return "FSDP"
    from transformers.integrations import is_deepspeed_zero3_enabled

    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3" or is_deepspeed_zero3_enabled():
        return "DeepSpeed ZeRO-3"
    for stage in recipe.stages:  # training.deepspeed: a ZeRO config file or mapping of the recipe's own
        config = {**recipe.training, **stage.training}.get("deepspeed")
        if isinstance(config, str) and Path(config).is_file():
            config = json.loads(Path(config).read_text())
        if isinstance(config, dict) and (config.get("zero_optimization") or {}).get("stage") == 3:
            return "DeepSpeed ZeRO-3"
    return None


def checkpoint_origin(recipe: Recipe) -> dict[str, Any] | None:
    """Which weights a run started from: the checkpoint, the revision asked for and the commit it
    resolved to (a branch such as ``main`` moves; the commit does not). None from scratch."""
    if not recipe.model.model_name_or_path:
        return None
    name, revision = recipe.model.model_name_or_path, recipe.model.revision
    commit = None
    if not Path(name).is_dir():  # a hub id: the snapshot folder the revision resolved to is named by its commit
        from huggingface_hub import hf_hub_download

        commit = Path(hf_hub_download(name, "config.json", revision=revision)).parent.name
    return {"model_name_or_path": name, "revision": revision, "commit": commit}


def check_launch(recipe: Recipe, state: PartialState) -> None:
    """Refuse launches that would go wrong silently or hang: processes that did not join one
    process group (each would train alone into the same folder), and mechanism measurements under
    sharded parameters (they run on the main process alone, whose forward would wait forever for
    the other processes' all-gathers)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > state.num_processes:
        raise RecipeError(
            f"this is one of {launched} launched processes (WORLD_SIZE), but they did not join one process "
            f"group (this one sees {state.num_processes}); on a machine without GPUs add --training.use_cpu=true"
        )
    sharding = sharded_parameters(recipe)
    enabled = [name for name in MEASUREMENTS if recipe.measurement_args(name).enabled]
    if sharding and enabled:
        flags = " ".join(f"--{name}.enabled=false" for name in enabled)
        raise RecipeError(
            f"{', '.join(enabled)} read whole parameters on the main process alone, which {sharding} shards "
            f"across processes; switch them off for this launch ({flags}) or use DDP or DeepSpeed ZeRO-2"
        )


def prepare_folder(recipe: Recipe, folder: RunFolder, state: PartialState) -> dict[str, Any]:
    """The main process locks the run folder and checks it (nothing is written); every process
    gets the same plan, or the same error."""
    error, plan = None, None
    if state.is_main_process:
        try:
            folder.lock()
            plan = folder.plan(recipe.resolved, [s.name for s in recipe.stages], recipe.run.overwrite_output_dir)
        except FolderError as failure:
            error = str(failure)
            folder.release(remove=True)  # the lock file, if this run made and holds it
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error, plan = broadcast_object_list([error, plan])
    if error:
        raise RecipeError(error)
    assert plan is not None, "the main process made the plan or said why not"
    return plan


def run(recipe: Recipe) -> dict[str, Any]:
    """Train every stage of ``recipe`` in order and return (and write) the results.

    Everything is written into ``<output_dir>.partial`` (``iml_hf.training.run_folder``), which replaces
    ``output_dir`` once the run has finished; a killed run rerun with the same command resumes."""
    recipe.check_training_arguments()  # before anything is written
    if recipe.run.torch_threads:
        torch.set_num_threads(recipe.run.torch_threads)
    state = PartialState()
    check_launch(recipe, state)
    folder = RunFolder(recipe.run.output_dir)
    plan = prepare_folder(recipe, folder, state)
    try:
        with console.library_output():
            return _run(recipe, state, folder, plan)
    finally:  # a run that failed before starting its work folder leaves no lock file either
        folder.release(remove=state.is_main_process and not folder.work.exists())


def _run(recipe: Recipe, state: PartialState, folder: RunFolder, plan: dict[str, Any]) -> dict[str, Any]:
    """The run's steps in order: data, model, folder, stages, results."""
    started = time.perf_counter()
    data = _prepare_inputs(recipe, state)
    model = _build_model(recipe, data.tokenizer, state)
    if state.is_main_process:
        folder.start(recipe.resolved, plan)
    state.wait_for_everyone()
    if plan["finished"]:  # killed while putting the finished run in place
        return finish(recipe, state, folder, json.loads((folder.work / "results.json").read_text()), data.corpus)
    _announce_resume(recipe, plan, folder, state.is_main_process)
    if plan["weights"]:
        load_stage_weights(model, plan["weights"])
    trained = train_stages(recipe, state, folder, plan, data, model)
    _save_final_model(recipe, state, folder, plan, trained.trainer)
    results = _results(recipe, state, plan, data.corpus, model, trained, time.perf_counter() - started)
    _write_results(recipe, state, folder, results, data.corpus)
    return finish(recipe, state, folder, results, data.corpus)


def _prepare_inputs(recipe: Recipe, state: PartialState) -> RunData:
    """Corpus, tokenizer, evaluation sets and measurement inputs, each step timed on the console."""
    main = state.is_main_process
    with console.timed("corpus", main) as line:
        corpus, tokenizer, tokenized = prepare_data(recipe, state)
        line["text"] = (
            f"{recipe.task.name}, "
            + ", ".join(f"{split} {len(rows):,} rows" for split, rows in corpus.items())
            + f"; tokenizer {len(tokenizer):,} tokens"
        )
    recipe.check_sequence_lengths(tokenized)  # max_position_embeddings vs the corpus, before anything is written
    with console.timed("evaluation sets and measurement inputs", main) as line:
        evaluation = eval_sets(tokenized, recipe)
        inputs = mechanism_inputs(recipe, tokenized, tokenizer)
        line["text"] = f"{len(evaluation)} sets" + (f"; {', '.join(inputs)}" if inputs else "")
    return RunData(corpus, tokenizer, tokenized, evaluation, inputs)


def _build_model(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, state: PartialState) -> PreTrainedModel:
    """The model, seeded; a checkpoint that cannot be loaded is a RecipeError."""
    set_seed(recipe.run.seed)
    try:
        with console.timed("model", state.is_main_process) as line:
            model = build_model(recipe.model, tokenizer)
            line["text"] = (
                f"{recipe.model.model_name_or_path or recipe.model.architecture}, "
                f"{count_parameters(model)['total']:,} parameters"
            )
    except OSError as error:
        raise RecipeError(
            f"model.model_name_or_path={recipe.model.model_name_or_path!r} cannot be loaded: {error}"
        ) from None
    if recipe.measurement_args("layer_analysis").enabled:
        architecture_of(model)  # an unknown decoder fails now, not at the first stage's end
    return model


def _announce_resume(recipe: Recipe, plan: dict[str, Any], folder: RunFolder, main: bool) -> None:
    if not main:
        return
    if plan.get("trunk") and not plan["checkpoint"]:
        stage = recipe.stages[plan["index"]].name
        console.say(f"starting stage {stage} in {folder.work} from the weights of {plan['trunk']}")
    elif plan["resume"]:
        done = f"after stage {recipe.stages[plan['index'] - 1].name}" if plan["index"] else "at the start"
        where = f"from {plan['checkpoint']}" if plan["checkpoint"] else done
        console.say(f"resuming the run in {folder.work} {where}")


def _save_final_model(
    recipe: Recipe, state: PartialState, folder: RunFolder, plan: dict[str, Any], trainer: IMLTrainer | None
) -> None:
    if not recipe.run.save_model:
        return
    if trainer is not None:
        trainer.save_model(str(folder.work))
    elif state.is_main_process:  # every stage had finished before this rerun: the last stage's weights
        for file in Path(plan["weights"]).iterdir():
            if file.name != "carried_optimizer.pt":
                shutil.copy2(file, folder.work / file.name)


def _results(
    recipe: Recipe,
    state: PartialState,
    plan: dict[str, Any],
    corpus: DatasetDict,
    model: PreTrainedModel,
    trained: TrainedStages,
    seconds: float,
) -> dict[str, Any]:
    """results.json: the final EM and contrasts, every stage's entry, the corpus, model and run."""
    stages, contrasts = trained.stages, recipe.task.contrasts
    final = stages[recipe.stages[-1].name]
    branch = getattr(recipe.task, "branch", None)
    return {
        "final_em": final["em"],
        "contrasts": final["contrasts"],
        "intervals": stage_intervals(final, contrasts),  # this run's 95% Wilson (EM) and Newcombe (contrasts)
        "contrast_sets": [[name, *pair] for name, pair in contrasts.items()],  # a list: keeps the order
        "subsets": list(recipe.task.subsets),
        "stages": {name: {**entry, "intervals": stage_intervals(entry, contrasts)} for name, entry in stages.items()},
        "wall_time_s": round(seconds + trained.earlier_seconds, 3),
        "corpus": {
            "cache_key": corpus_key(recipe.task, recipe.run.seed),
            "fingerprint": corpus_fingerprint(corpus),
            "rows": {split: len(rows) for split, rows in corpus.items()},
        },
        "parameters": count_parameters(model),
        "checkpoint": checkpoint_origin(recipe),
        **(
            {
                "branch": {
                    "index": branch,
                    "pair": branch // 2,
                    "stage": recipe.run.branch_stage,
                    "trunk": plan.get("trunk"),
                }
            }
            if branch is not None
            else {}
        ),
        "processes": state.num_processes,  # the global batch is per_device_train_batch_size x processes x accumulation
        "recipe": recipe.resolved,
        "provenance": provenance(),  # versions, git commit, date, command line (no host, user or secret)
    }


def _write_results(
    recipe: Recipe, state: PartialState, folder: RunFolder, results: dict[str, Any], corpus: DatasetDict
) -> None:
    """Clear the resume files, write the model cards and, last, results.json (a work folder with it
    is a finished run)."""
    if not state.is_main_process:
        return
    work = folder.work
    shutil.rmtree(work / "resume", ignore_errors=True)
    if recipe.run.checkpoint_steps:
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    remove_empty_dirs(work / "checkpoints")
    write_model_cards(work, results, hub_repo_id(recipe) if recipe.run.push_to_hub else None, _example(corpus))
    write_json_atomic(work / "results.json", results)


def _example(corpus: DatasetDict) -> tuple[str, str] | None:
    """A held-out (prompt, answer) for the model card's usage example."""
    return next(((row["prompt"], row["answer"]) for row in corpus["test"] if row["prompt"]), None)


def finish(
    recipe: Recipe, state: PartialState, folder: RunFolder, results: dict[str, Any], corpus: DatasetDict
) -> dict[str, Any]:
    """Put the finished run in place of ``output_dir``, then push it to the Hub if asked (a failed
    push leaves the finished run in place)."""
    if state.is_main_process:
        folder.finish(keep_checkpoints=not recipe.run.checkpoint_steps)
        folder.release(remove=True)
        if recipe.run.push_to_hub:  # once, after results.json and the card exist
            print(f"pushed the run to https://huggingface.co/{push_run(folder.out, recipe, results, _example(corpus))}")
    state.wait_for_everyone()
    return results
