"""The tasks: classification, segmentation, regression, each one module implementing sciconv.tasks.base.Task.

The loop in `sciconv.steps.train` is the same for every task; it asks a task object for
  train_batches(augment, device, rank, world)   a sciconv.batches.TrainBatches: (inputs, targets) per step
  loss(logits, targets)
  validate(net, device, amp)     validation metrics and the one number the best model maximises
  finalize(net, device, amp)     what the saved model needs besides its weights (a threshold, a scaler)
and each task module has evaluate(ds, net, checkpoint, test, device, out_dir),
explain(ds, net, checkpoint, test, device, out_dir) and the PredictionTable for the steps of those
names. Importing a task module is cheap (torch is imported inside the functions that need it), so
the data steps and the workflow at parse time ask the task's class-level facts freely.
"""

from __future__ import annotations

import importlib

TASK_MODULES = {"segmentation": "segmentation", "classification": "classification", "regression": "regression"}


def task_module(task: str):
    """The module with the task's class and its evaluate(...) and explain(...) functions."""
    if task not in TASK_MODULES:
        raise ValueError(f"task {task!r} cannot be trained yet; sciconv trains {', '.join(TASK_MODULES)}")
    return importlib.import_module(f"{__name__}.{TASK_MODULES[task]}")


def task_for(task: str):
    """The task class for a dataset's `task:` value."""
    return getattr(task_module(task), task.capitalize())
