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
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase, set_seed

from iml_hf import console
from iml_hf.architectures import architecture_of
from iml_hf.callbacks.subset_em import SubsetEMCallback
from iml_hf.corpus import corpus_fingerprint, corpus_key, load_corpus_dataset, load_or_build_corpus
from iml_hf.data import PadCollator, stage_train_set
from iml_hf.hub import hub_repo_id, push_run
from iml_hf.io import MetricsLog, remove_empty_dirs, write_json_atomic
from iml_hf.measurements import MEASUREMENTS
from iml_hf.model_card import stage_intervals, write_model_cards
from iml_hf.modeling import build_model, count_parameters
from iml_hf.provenance import provenance
from iml_hf.recipe import Recipe, RecipeError
from iml_hf.run_folder import FolderError, RunFolder
from iml_hf.tasks import contrast_values, eval_set_name, eval_set_order
from iml_hf.tokenization import build_wordlevel_tokenizer, load_pretrained_tokenizer, tokenize_corpus
from iml_hf.trackers import TrackerRun
from iml_hf.trainer import CHECKPOINT_MARKER, IMLTrainer, TrainingRows, make_resumable


def eval_sets(tokenized: DatasetDict, recipe: Recipe) -> dict[str, Dataset]:
    """Rows per evaluation set (a fixed random sample when capped): held-out rows grouped by
    subset and kind (``<subset>``, ``assoc_<subset>``) in the task's subset order, then with
    ``monitor_train`` the training questions and definitions per subset (``train_<kind>_<subset>``)."""
    groups: dict[str, list[int]] = {}
    test = tokenized["test"]
    for i, (subset, kind) in enumerate(zip(test["subset"], test["kind"])):
        groups.setdefault(eval_set_name(subset, kind), []).append(i)
    names = eval_set_order(list(groups), list(recipe.task.subsets))
    sources = {name: (test, groups[name]) for name in names}
    train = tokenized["train"]
    monitored: dict[str, list[int]] = {}
    for i, (subset, kind) in enumerate(zip(train["subset"], train["kind"])):
        if kind in ("question", "definition"):
            monitored.setdefault(f"train_{kind}_{subset}", []).append(i)
    if recipe.evaluation.monitor_train:
        names += eval_set_order(list(monitored), list(recipe.task.subsets))
    sources.update({name: (train, indices) for name, indices in monitored.items()})
    names += [n for n in recipe.evaluation.extra_subsets or [] if n not in names]
    if recipe.evaluation.subsets or recipe.evaluation.extra_subsets:
        missing = [n for n in recipe.evaluation.subsets or recipe.evaluation.extra_subsets if n not in sources]
        if missing:
            key = "subsets" if recipe.evaluation.subsets else "extra_subsets"
            raise ValueError(
                f"evaluation.{key} names {missing}, which this corpus does not have; it has {sorted(sources)}"
            )
        names = list(recipe.evaluation.subsets or names)
    sets = {}
    for name in names:
        split, indices = sources[name]
        rows = split.select(indices)
        if name.startswith("train_definition_"):  # a repeated definition is one example
            first = {text: i for i, text in reversed(list(enumerate(rows["text"])))}
            rows = rows.select(sorted(first.values()))
        cap = recipe.evaluation.max_examples_per_subset
        if cap and len(rows) > cap:
            rows = rows.shuffle(seed=0).select(range(cap))
        sets[name] = rows
    return sets


def load_tokenizer(recipe: Recipe, corpus: DatasetDict) -> PreTrainedTokenizerBase:
    """The checkpoint's (or ``tokenizer_name_or_path``'s) tokenizer, with the task's invented words
    as tokens when ``add_task_tokens``; else a WordLevel tokenizer built from the corpus."""
    model = recipe.model
    name = model.tokenizer_name_or_path or model.model_name_or_path
    if not name:
        return build_wordlevel_tokenizer(corpus)
    words = recipe.task.task_words(corpus, recipe.run.seed) if model.add_task_tokens else None
    revision = model.revision if name == model.model_name_or_path else "main"
    return load_pretrained_tokenizer(name, revision, model.trust_remote_code, words)


def prepare_data(
    recipe: Recipe, state: PartialState | None = None
) -> tuple[DatasetDict, PreTrainedTokenizerBase, DatasetDict]:
    """The recipe's corpus (built once, by the main process first), its tokenizer and the tokenized corpus."""
    state = state or PartialState()
    with state.main_process_first():
        if recipe.run.corpus_dataset:  # a published corpus (a Hub id or a folder), checked against the task
            corpus = load_corpus_dataset(
                recipe.run.corpus_dataset,
                recipe.task,
                recipe.run.seed,
                recipe.run.corpus_revision,
                recipe.run.cache_dir,
            )
        else:
            corpus = load_or_build_corpus(recipe.task, recipe.run.seed, recipe.run.cache_dir)
    try:
        tokenizer = load_tokenizer(recipe, corpus)
    except OSError as error:  # no such folder or hub id, offline without a cached copy, a bad revision
        raise RecipeError(
            f"model.model_name_or_path={recipe.model.model_name_or_path!r} (tokenizer "
            f"{recipe.model.tokenizer_name_or_path!r}) cannot be loaded: {error}"
        ) from None
    return corpus, tokenizer, tokenize_corpus(corpus, tokenizer, recipe.model.loss_on or "answer")


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
    return plan


def start_values(path: Path, stage_index: int) -> dict[str, float]:
    """EM per set at step 0 of stage ``stage_index`` as metrics.jsonl recorded it (a run resumed
    inside a branch stage measured its start before it was killed)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {
        r["subset"]: r["value"]
        for r in rows
        if r.get("family") == "eval"
        and r.get("metric") == "em"
        and r["stage_index"] == stage_index
        and r["stage_step"] == 0
    }


def saved_names(model: torch.nn.Module) -> dict[str, str]:
    """{name in the saved file: name in the model} where ``save_pretrained`` renames a weight
    (transformers 5 writes GPT-NeoX's ``lm_head`` as the hub's ``embed_out``), found by asking
    transformers' own reverse conversion which tensor it writes under which name."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # a transformers without save-time renaming
        return {}
    own = model.state_dict()
    by_tensor = {id(tensor): name for name, tensor in own.items()}
    written = revert_weight_conversion(model, dict(own))
    return {name: by_tensor[id(t)] for name, t in written.items() if by_tensor.get(id(t), name) != name}


def load_stage_weights(model: torch.nn.Module, folder: str) -> None:
    """The weights a finished stage ended with (saved by ``Trainer.save_model``, under the names
    ``save_pretrained`` writes; tied weights are saved once and tied again)."""
    from safetensors.torch import load_file

    renamed = saved_names(model)
    weights = {renamed.get(k, k): v for k, v in load_file(str(Path(folder) / "model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    model.tie_weights()
    tied = {name for name, p in model.named_parameters(remove_duplicate=False)} - {
        n for n, _ in model.named_parameters()
    }
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"the weights in {folder} do not fit the model (missing {missing}, unexpected {unexpected})")


def measured(callbacks: list[Any], max_steps: int) -> list[str]:
    """What each measurement callback of a stage measures and when, for the stage banner (an
    interval of steps the stage never reaches is left out)."""
    described = []
    for callback in callbacks:
        name = callback.label
        if isinstance(callback, SubsetEMCallback):
            sizes = callback.sizes
            same = len(set(sizes.values())) == 1
            sets = ", ".join(sizes) if same else ", ".join(f"{k} {v:,}" for k, v in sizes.items())
            name += (
                f" on {len(sizes)} sets"
                + (f" of {next(iter(sizes.values())):,}" if same and sizes else "")
                + (f" ({sets})" if same else f" (n: {sets})")
            )
        within = callback.interval and (callback.strategy != "steps" or callback.interval < max_steps)
        when = f"every {callback.interval} {callback.strategy} and at the end" if within else "at the end"
        described.append(f"{name} {when}")
    return described


def stage_banner(recipe: Recipe, index: int, trainer: IMLTrainer, callbacks: list[Any]) -> Any:
    """The banner ``ConsoleCallback`` prints when the stage starts (it knows the step count then)."""
    stage = recipe.stages[index]

    def banner(state: Any) -> str:
        return console.stage_banner(
            index,
            len(recipe.stages),
            stage.name,
            list(stage.train_subsets),
            dict(stage.replay),
            len(trainer.train_dataset),
            state.max_steps,
            measured(callbacks, state.max_steps),
            state.global_step,
        )

    return banner


def run(recipe: Recipe) -> dict[str, Any]:
    """Train every stage of ``recipe`` in order and return (and write) the results.

    Everything is written into ``<output_dir>.partial`` (``iml_hf.run_folder``), which replaces
    ``output_dir`` once the run has finished; a killed run rerun with the same command resumes."""
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
    started = time.perf_counter()
    seed = recipe.run.seed
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
    set_seed(seed)
    try:
        with console.timed("model", main) as line:
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

    work = folder.work
    if state.is_main_process:
        folder.start(recipe.resolved, plan)
    state.wait_for_everyone()
    if plan["finished"]:  # killed while putting the finished run in place
        results = json.loads((work / "results.json").read_text())
        return finish(recipe, state, folder, results, corpus)
    if plan.get("trunk") and not plan["checkpoint"]:
        if main:
            console.say(
                f"starting stage {recipe.stages[plan['index']].name} in {work} from the weights of {plan['trunk']}"
            )
    elif plan["resume"]:
        done = f"after stage {recipe.stages[plan['index'] - 1].name}" if plan["index"] else "at the start"
        where = f"from {plan['checkpoint']}" if plan["checkpoint"] else done
        if main:
            console.say(f"resuming the run in {work} {where}")
    if plan["weights"]:
        load_stage_weights(model, plan["weights"])
    metrics_log = MetricsLog(work / "metrics.jsonl", enabled=state.is_main_process, seed=seed)
    trackers = TrackerRun.from_recipe(recipe)  # one wandb run and one TensorBoard folder for all stages
    trackers.log_dir, trackers.wandb_dir = str(work / "tensorboard"), str(work)

    stage_names = [stage.name for stage in recipe.stages]
    stages: dict[str, dict[str, Any]] = dict(plan["stages"])
    earlier_seconds = sum(entry["wall_time_s"] for entry in stages.values())
    step_offset, optimizer, trainer = plan["step_offset"], None, None
    for index, stage in enumerate(recipe.stages):
        if index < plan["index"]:
            continue
        checkpoint = plan["checkpoint"] if index == plan["index"] else None
        resumed = json.loads((Path(checkpoint) / CHECKPOINT_MARKER).read_text()) if checkpoint else None
        carried_state = None
        if index and not stage.reset_optimizer and optimizer is None:  # resumed at or in this stage
            carried_state = torch.load(Path(plan["weights"]) / "carried_optimizer.pt", weights_only=True)
        args = recipe.training_arguments(stage, output_dir=str(folder.checkpoint_dir(stage.name)))
        make_resumable(args, recipe.run.checkpoint_steps)
        trainer = IMLTrainer(
            model=model,
            args=args,
            train_dataset=stage_train_set(tokenized["train"], stage, seed + index),
            data_collator=PadCollator(tokenizer.pad_token_id),
            processing_class=tokenizer,
            stage_name=stage.name,
            stage_index=index,
            step_offset=step_offset,
            carried_optimizer=None if stage.reset_optimizer else optimizer,
            carried_optimizer_state=carried_state,
            tracker_run=trackers,
            resumed=resumed,
        )
        at_start = getattr(recipe.task, "branch", None) is not None and stage.name == recipe.run.branch_stage
        em = SubsetEMCallback(
            trainer,
            evaluation,
            metrics_log,
            recipe.evaluation.eval_steps,
            recipe.evaluation.batch_size,
            answer_match=getattr(recipe.task, "answer_match", "tokens"),
            loss=recipe.evaluation.loss,
            at_start=at_start,
            samples=index == len(recipe.stages) - 1,  # samples.jsonl: the final evaluation's
        )
        trainer.add_callback(em)
        trainer.add_callback(TrainingRows(trainer, metrics_log))
        mechanisms = {
            MEASUREMENTS[name].result_key: MEASUREMENTS[name].callback(
                trainer, prepared, metrics_log, work, recipe.measurement_args(name)
            )
            for name, prepared in inputs.items()
        }
        for callback in mechanisms.values():
            trainer.add_callback(callback)
        console.use_console(trainer, stage_banner(recipe, index, trainer, [em, *mechanisms.values()]))
        output = trainer.train(resume_from_checkpoint=checkpoint)
        if em.keep_samples and state.is_main_process:  # before the stage is recorded: a rerun would not retrain it
            em.write_samples(work / "samples.jsonl")
        if recipe.run.hub_stage_branches:  # this stage's weights, for its branch of the Hub repo
            trainer.save_model(str(work / "stages" / stage.name))
        stages[stage.name] = {
            "em": em.latest,
            "n": em.sizes,
            "metrics": em.latest_metrics,
            "contrasts": contrast_values(recipe.task.contrasts, em.latest),
            "wall_time_s": round(trainer.resumable.elapsed(), 3),
            "steps": trainer.state.global_step,
            "train_examples": len(trainer.train_dataset),
            "train_loss": output.training_loss,
            **(
                {
                    "em_start": (start := em.start or start_values(metrics_log.path, index)),
                    "contrasts_start": contrast_values(recipe.task.contrasts, start),
                }
                if at_start
                else {}
            ),
            **{name: callback.latest for name, callback in mechanisms.items()},
            "measurement_seconds": {
                name: round(callback.seconds, 3) for name, callback in {"em": em, **mechanisms}.items()
            },
        }
        step_offset += trainer.state.global_step
        optimizer = trainer.unwrapped_optimizer()
        if resumed:
            earlier_seconds += resumed["stage_seconds"]
        # what a rerun needs to start the next stage: these weights (and optimizer, if it carries on)
        trainer.save_model(str(work / "resume" / stage.name))
        if state.is_main_process:
            following = recipe.stages[index + 1] if index + 1 < len(recipe.stages) else None
            if following is not None and not following.reset_optimizer:
                torch.save(optimizer.state_dict(), work / "resume" / stage.name / "carried_optimizer.pt")
            folder.record_stage(stage.name, stages[stage.name], step_offset, stage_names)
        state.wait_for_everyone()
    trackers.finish()

    if recipe.run.save_model:
        if trainer is not None:
            trainer.save_model(str(work))
        elif state.is_main_process:  # every stage had finished before this rerun: the last stage's weights
            for file in Path(plan["weights"]).iterdir():
                if file.name != "carried_optimizer.pt":
                    shutil.copy2(file, work / file.name)
    final = stages[recipe.stages[-1].name]
    results = {
        "final_em": final["em"],
        "contrasts": final["contrasts"],
        "intervals": stage_intervals(
            final, recipe.task.contrasts
        ),  # this run's 95% Wilson (EM) and Newcombe (contrasts)
        "contrast_sets": [[name, *pair] for name, pair in recipe.task.contrasts.items()],  # a list: keeps the order
        "subsets": list(recipe.task.subsets),
        "stages": {
            name: {**entry, "intervals": stage_intervals(entry, recipe.task.contrasts)}
            for name, entry in stages.items()
        },
        "wall_time_s": round(time.perf_counter() - started + earlier_seconds, 3),
        "corpus": {
            "cache_key": corpus_key(recipe.task, seed),
            "fingerprint": corpus_fingerprint(corpus),
            "rows": {split: len(rows) for split, rows in corpus.items()},
        },
        "parameters": count_parameters(model),
        "checkpoint": checkpoint_origin(recipe),
        **(
            {
                "branch": {
                    "index": recipe.task.branch,
                    "pair": recipe.task.branch // 2,
                    "stage": recipe.run.branch_stage,
                    "trunk": plan.get("trunk"),
                }
            }
            if getattr(recipe.task, "branch", None) is not None
            else {}
        ),
        "processes": state.num_processes,  # the global batch is per_device_train_batch_size x processes x accumulation
        "recipe": recipe.resolved,
        "provenance": provenance(),  # versions, git commit, date, command line (no host, user or secret)
    }
    if state.is_main_process:
        shutil.rmtree(work / "resume", ignore_errors=True)
        if recipe.run.checkpoint_steps:
            shutil.rmtree(work / "checkpoints", ignore_errors=True)
        remove_empty_dirs(work / "checkpoints")
        example = next(((row["prompt"], row["answer"]) for row in corpus["test"] if row["prompt"]), None)
        write_model_cards(work, results, hub_repo_id(recipe) if recipe.run.push_to_hub else None, example)
        write_json_atomic(work / "results.json", results)  # last: a work folder with it is a finished run
    return finish(recipe, state, folder, results, corpus)


def finish(
    recipe: Recipe, state: PartialState, folder: RunFolder, results: dict[str, Any], corpus: DatasetDict
) -> dict[str, Any]:
    """Put the finished run in place of ``output_dir``, then push it to the Hub if asked (a failed
    push leaves the finished run in place)."""
    if state.is_main_process:
        folder.finish(keep_checkpoints=not recipe.run.checkpoint_steps)
        folder.release(remove=True)
        if recipe.run.push_to_hub:  # once, after results.json and the card exist
            example = next(((row["prompt"], row["answer"]) for row in corpus["test"] if row["prompt"]), None)
            print(f"pushed the run to https://huggingface.co/{push_run(folder.out, recipe, results, example)}")
    state.wait_for_everyone()
    return results
