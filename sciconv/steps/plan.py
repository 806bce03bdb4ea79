"""plan: ingested.h5 + split.json + preprocessed.h5 -> fingerprint.json, plan.json.

It runs after preprocess because the network and the batches see the preprocessed grid; the one
preprocessing choice that must come first, the target spacing, is made at the start of preprocess
by the same rule (sciconv.planning.target_spacing) and reported here. Train, evaluate and explain
apply plan.json under the keys the dataset YAML leaves out (sciconv.planning.apply).
"""

from __future__ import annotations

import numpy as np

from sciconv import fingerprint as fingerprints
from sciconv import planning
from sciconv.config import DatasetConfig
from sciconv.data import load_split
from sciconv.paths import DatasetPaths
from sciconv.runtime import atomic_write_json, log, pick_device
from sciconv.store import StoreReader


def preprocessed_shapes(path, ids: list[str]) -> tuple[np.ndarray, int, str | None]:
    """Spatial shapes and channels of the preprocessed training samples (headers only), and what
    preprocess planned."""
    with StoreReader(path) as store:
        images = [store.file["samples"][i]["image"] for i in ids]
        planned = store.attrs.get("planned")  # JSON text, as the store keeps nested attributes
        return np.asarray([im.shape[1:] for im in images]), int(images[0].shape[0]), planned


def check_split(ds: DatasetConfig, split: dict) -> None:
    if len(split["train"]) < 2 or not split["val"]:
        raise planning.PlanError(
            f"{ds.path}: the split left {len(split['train'])} training and {len(split['val'])} validation samples; "
            "training needs at least 2 and 1 (and a test set to score): add samples, or lower split.val_fraction "
            "and split.test_fraction")


def run(ds: DatasetConfig, device: str | None = None, threads: int | None = None) -> None:
    import json

    import torch

    paths = DatasetPaths(ds.results_dir)
    split = load_split(paths.split)
    check_split(ds, split)
    fingerprint = fingerprints.compute(paths.ingested, split["train"] + split["val"], ds.class_names, ds.task,
                                       ds.seed)
    atomic_write_json(paths.fingerprint, fingerprint)
    shapes, in_channels, preprocess_planned = preprocessed_shapes(paths.preprocessed, split["train"])
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device or ds.global_cfg["device"])
    plan = planning.Plan()
    for key, decision in json.loads(preprocess_planned or "{}").items():
        plan.set(key, decision["value"], decision["reason"] + " (applied by preprocess)")
    ctx = planning.Context(ds, fingerprint, shapes, in_channels, len(split["train"]), len(split["val"]), dev, plan)
    ds.task.plan(ctx)
    atomic_write_json(paths.plan, {"dataset": ds.name, "task": ds.cfg["task"], "device": str(dev),
                                   "normalisation": ds.domain.normalisation, **plan.to_json()})
    for key, decision in plan.settings.items():
        log.info("planned %s = %s: %s", key, decision.value, decision.reason)
    log.info("fingerprint of %d samples -> %s; plan -> %s", fingerprint["n_samples"], paths.fingerprint, paths.plan)
