"""What differs between tasks inside the one training loop: data loading, loss, validation, what the model keeps.

The loop in `sciconv.steps.train` is the same for every task; it asks a task object for
  train_batches(augment, device, rank, world)   a sciconv.batches.TrainBatches: (inputs, targets) per step
  loss(logits, targets)
  validate(net, device, amp)     validation metrics and the one number the best model maximises
  finalize(net, device, amp)     what the saved model needs besides its weights (a threshold, a scaler)
and each task module has evaluate(ds, net, checkpoint, test, device, out_dir) and
explain(ds, net, checkpoint, test, device, out_dir) for the steps of the same names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskFacts:
    """What the workflow must know of a task when it parses, before any job: without importing the
    task's module (and torch with it), which costs seconds on every `snakemake -n`."""

    module: str
    # the test metric the summary shows beside its classical baseline (baseline_<metric>)
    headline_metric: str = ""
    # one output per pixel or voxel (a segmenter network), else one row per image
    dense: bool = False
    # config keys the task's evaluate reads beyond sciconv.settings.DATASET_READS["evaluate"]
    evaluate_reads: tuple[str, ...] = ()


TASKS = {
    "segmentation": TaskFacts("segmentation", headline_metric="dice_mean", dense=True),
    # the pointing game scores the saliency method's maps inside the evaluation
    "classification": TaskFacts("classification", headline_metric="auroc",
                                evaluate_reads=("explain.method", "explain.pointing_tolerance_px", "explain.target_layer")),
    "regression": TaskFacts("regression", headline_metric="r2_mean"),
}
TASK_MODULES = {name: facts.module for name, facts in TASKS.items()}


def task_module(task: str):
    """The module with the task's class and its evaluate(...) and explain(...) functions."""
    if task not in TASK_MODULES:
        raise ValueError(f"task {task!r} cannot be trained yet; sciconv trains {', '.join(TASK_MODULES)}")
    return importlib.import_module(f"{__name__}.{TASK_MODULES[task]}")


def task_for(task: str):
    """The task class for a dataset's `task:` value."""
    return getattr(task_module(task), task.capitalize())
