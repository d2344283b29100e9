"""The stages of a run, trained in order on one model: each stage's Trainer and callbacks, its
entry in results.json, and what a rerun needs to resume after it (weights, carried optimizer)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import PartialState

from iml_hf.data.collators import PadCollator, stage_train_set
from iml_hf.measure.callbacks.subset_em import SubsetEMCallback
from iml_hf.measure.registry import MEASUREMENTS
from iml_hf.tasks import contrast_values
from iml_hf.training.progress import use_console
from iml_hf.training.run_folder import RunFolder
from iml_hf.training.trackers import TrackerRun
from iml_hf.training.trainer import CHECKPOINT_MARKER, IMLTrainer, TrainingRows, make_resumable
from iml_hf.utils import console
from iml_hf.utils.io import MetricsLog

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from iml_hf.config.args import StageArguments
    from iml_hf.config.recipe import Recipe
    from iml_hf.data.prepare import RunData


@dataclass
class TrainedStages:
    """What training the stages left: each stage's results entry, the last Trainer (None when every
    stage had finished before this rerun) and the wall time of stages trained by earlier processes."""

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    trainer: IMLTrainer | None = None
    earlier_seconds: float = 0.0


def train_stages(
    recipe: Recipe, state: PartialState, folder: RunFolder, plan: dict[str, Any], data: RunData, model: PreTrainedModel
) -> TrainedStages:
    """Train the stages the plan has not finished, recording each one in the work folder."""
    work = folder.work
    metrics_log = MetricsLog(work / "metrics.jsonl", enabled=state.is_main_process, seed=recipe.run.seed)
    trackers = TrackerRun.from_recipe(recipe)  # one wandb run and one TensorBoard folder for all stages
    trackers.log_dir, trackers.wandb_dir = str(work / "tensorboard"), str(work)
    trained = TrainedStages(dict(plan["stages"]))
    trained.earlier_seconds = sum(entry["wall_time_s"] for entry in trained.stages.values())
    step_offset, optimizer = plan["step_offset"], None
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
            train_dataset=stage_train_set(data.tokenized["train"], stage, recipe.run.seed + index),
            data_collator=PadCollator(data.tokenizer.pad_token_id),
            processing_class=data.tokenizer,
            stage_name=stage.name,
            stage_index=index,
            step_offset=step_offset,
            carried_optimizer=None if stage.reset_optimizer else optimizer,
            carried_optimizer_state=carried_state,
            tracker_run=trackers,
            resumed=resumed,
        )
        entry = _train_stage(recipe, index, trainer, data, metrics_log, work, checkpoint, state)
        trained.stages[stage.name], trained.trainer = entry, trainer
        step_offset += trainer.state.global_step
        optimizer = trainer.unwrapped_optimizer()
        if resumed:
            trained.earlier_seconds += resumed["stage_seconds"]
        _keep_for_resume(recipe, index, trainer, optimizer, work, state)
        if state.is_main_process:
            folder.record_stage(stage.name, entry, step_offset, [s.name for s in recipe.stages])
        state.wait_for_everyone()
    trackers.finish()
    return trained


def _train_stage(
    recipe: Recipe,
    index: int,
    trainer: IMLTrainer,
    data: RunData,
    metrics_log: MetricsLog,
    work: Path,
    checkpoint: str | None,
    state: PartialState,
) -> dict[str, Any]:
    """Add the stage's measurement callbacks, train it, and return its results entry."""
    stage = recipe.stages[index]
    at_start = getattr(recipe.task, "branch", None) is not None and stage.name == recipe.run.branch_stage
    em = SubsetEMCallback(
        trainer,
        data.evaluation,
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
        for name, prepared in data.inputs.items()
    }
    for callback in mechanisms.values():
        trainer.add_callback(callback)
    use_console(trainer, stage_banner(recipe, index, trainer, [em, *mechanisms.values()]))
    output = trainer.train(resume_from_checkpoint=checkpoint)
    if em.keep_samples and state.is_main_process:  # before the stage is recorded: a rerun would not retrain it
        em.write_samples(work / "samples.jsonl")
    if recipe.run.hub_stage_branches:  # this stage's weights, for its branch of the Hub repo
        trainer.save_model(str(work / "stages" / stage.name))
    contrasts = recipe.task.contrasts
    return {
        "em": em.latest,
        "n": em.sizes,
        "metrics": em.latest_metrics,
        "contrasts": contrast_values(contrasts, em.latest),
        "wall_time_s": round(trainer.resumable.elapsed(), 3),
        "steps": trainer.state.global_step,
        "train_examples": len(trainer.train_dataset),
        "train_loss": output.training_loss,
        **(
            {
                "em_start": (start := em.start or start_values(metrics_log.path, index)),
                "contrasts_start": contrast_values(contrasts, start),
            }
            if at_start
            else {}
        ),
        **{name: callback.latest for name, callback in mechanisms.items()},
        "measurement_seconds": {
            name: round(callback.seconds, 3) for name, callback in {"em": em, **mechanisms}.items()
        },
    }


def _keep_for_resume(
    recipe: Recipe, index: int, trainer: IMLTrainer, optimizer: Any, work: Path, state: PartialState
) -> None:
    """What a rerun needs to start the next stage: these weights (and the optimizer, if it carries on)."""
    stage: StageArguments = recipe.stages[index]
    trainer.save_model(str(work / "resume" / stage.name))
    following = recipe.stages[index + 1] if index + 1 < len(recipe.stages) else None
    if state.is_main_process and following is not None and not following.reset_optimizer:
        torch.save(optimizer.state_dict(), work / "resume" / stage.name / "carried_optimizer.pt")


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


def saved_names(model: PreTrainedModel) -> dict[str, str]:
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


def load_stage_weights(model: PreTrainedModel, folder: str) -> None:
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
