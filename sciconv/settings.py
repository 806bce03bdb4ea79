"""What each step reads from the configuration, so that it reruns when, and only when, that changes.

The workflow hands each rule `params: settings=...` holding exactly these values, resolved (defaults
filled in), and Snakemake's `params` rerun trigger compares them with the last run's: an edit of
`explain.n_samples` reruns explain and the summary, never training. The dataset YAML itself is no
rule's input, so a comment or the `description` reruns nothing. Input files carry the rest: a
retrained model.pt reruns evaluate and explain because it is their input.

Keys are dotted paths into the dataset config ("explain.method"); a top-level name takes the whole
section. A task can add what its evaluation reads beyond the common list (`Task.evaluate_reads`:
a classifier's pointing game reads the saliency method).
"""

from __future__ import annotations

import json

# Dataset keys each step reads. `description` is read by none; `gpus` only sets how many processes
# train (the same result, checked in tests/test_distributed.py), so it reruns nothing either.
DATASET_READS: dict[str, tuple[str, ...]] = {
    "simulate": ("domain", "task", "source"),
    "ingest": ("domain", "task", "source", "classes", "targets", "mask_values", "on_bad_input"),
    "split": ("task", "split"),
    "preprocess": ("domain", "task", "preprocess"),
    # the plan is conditioned on what the YAML fixes of the network and the training, and keeps a patch
    # square in the planes the augmentation rotates
    "plan": ("domain", "task", "classes", "targets", "mask_values", "regions", "model", "train", "augment"),
    "train": ("domain", "task", "classes", "targets", "mask_values", "regions", "model", "train", "augment",
              "init_from"),
    "evaluate": ("domain", "task", "classes", "targets", "mask_values", "regions", "baseline", "model", "train",
                 "evaluate"),
    # the predictions explain draws use the test-time augmentation evaluate uses
    "explain": ("domain", "task", "classes", "targets", "regions", "model", "train", "explain", "evaluate.tta",
                "evaluate.tta_axes"),
}
# Global keys each step reads. The seed draws simulated samples, the split and the initial weights;
# the device decides the numbers a model computes (bf16 on a GPU). The tracking URI, threads and
# GPU count change where or how fast, not what, and rerun nothing.
GLOBAL_READS: dict[str, tuple[str, ...]] = {
    "simulate": ("seed",),
    "split": ("seed",),
    "plan": ("seed", "device"),
    "train": ("seed", "device"),
    "evaluate": ("device",),
    "explain": ("device",),
}


def _lookup(cfg: dict, dotted: str):
    value = cfg
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def dataset_reads(step: str, task: str) -> tuple[str, ...]:
    reads = DATASET_READS[step]
    if step == "evaluate":
        from sciconv.tasks import task_for

        reads = reads + task_for(task).evaluate_reads
    return reads


def step_settings(ds, step: str) -> dict:
    """The resolved settings `step` reads for dataset `ds` (a DatasetConfig): dataset keys and global keys."""
    reads = dataset_reads(step, ds.cfg["task"])
    return {"dataset": {key: _lookup(ds.cfg, key) for key in reads},
            "global": {key: ds.global_cfg.get(key) for key in GLOBAL_READS.get(step, ())}}


def settings_text(ds, step: str) -> str:
    """step_settings as one canonical string: what the workflow's params compare between runs."""
    return json.dumps(step_settings(ds, step), sort_keys=True, separators=(",", ":"), default=str)
