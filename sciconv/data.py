"""Samples for training and evaluation: preprocessed.h5 + split.json -> records -> training batches.

The deterministic transforms ran once, in the preprocess step; validation and test use the
records as they are. Training adds the random part (crops, augmentation) per step, batched on
the device (`sciconv.batches`); each task says here which samples, crops and targets it trains on.
"""

from __future__ import annotations

import json
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from sciconv.store import ArrayCache, StoreReader, StoredArray

if TYPE_CHECKING:  # torch and MONAI load only where batches are built: plan and split read records without them
    from sciconv.augment import BatchAugment
    from sciconv.batches import TrainBatches


def load_split(path: Path | str) -> dict[str, list[str]]:
    return json.loads(Path(path).read_text())


def load_records(store_path: Path | str, ids: list[str], lazy_cache: ArrayCache | None = None) -> list[dict]:
    """One dict per sample: image (C, *spatial), mask_channel: the mask as a
    channel (1, *spatial), where the store keeps it as (*spatial); id and attributes.

    With lazy_cache the image and mask stay in the store as StoredArrays, read when indexed
    (train.cache: store, for training sets larger than memory)."""
    records = []
    with StoreReader(store_path) as store:
        for sample_id in ids:
            attrs = store.sample_attrs(sample_id)
            if lazy_cache is not None:
                record = {"image": store.stored(sample_id, "image", np.float32, lazy_cache), "id": sample_id,
                          "attrs": attrs, "label": attrs.get("label")}
                mask = store.stored(sample_id, "mask", np.int64, lazy_cache)
                if mask is not None:
                    record["mask_channel"] = mask
                records.append(record)
                continue
            sample = store.sample(sample_id)
            record = {"image": sample.image.astype(np.float32), "id": sample.id, "attrs": sample.attrs,
                      "label": sample.attrs.get("label")}
            if sample.mask is not None:
                record["mask_channel"] = sample.mask[None].astype(np.int64)
            records.append(record)
    return records


def stored_bytes(store_path: Path | str, ids: list[str]) -> int:
    """What the samples take in memory as training arrays (float32 images, int64 masks), read from shapes only."""
    total = 0
    with StoreReader(store_path) as store:
        for sample_id in ids:
            group = store.file["samples"][sample_id]
            total += int(np.prod(group["image"].shape)) * 4
            if "mask" in group:
                total += int(np.prod(group["mask"].shape)) * 8
    return total


def segmentation_batches(records: list[dict], num_classes: int, train_cfg: dict, augment: BatchAugment,
                         device, rank: int = 0, world: int = 1) -> TrainBatches:
    """Patches of train.patch_size centred on classes in train.class_sampling_ratios (or on foreground
    vs background, patch_sampling pos_neg), patches_per_image from each drawn image."""
    size = list(train_cfg["patch_size"])
    from sciconv.batches import Crops, TrainBatches, pad_to

    lazy = bool(records) and isinstance(records[0]["image"], StoredArray)
    if lazy:
        images, masks = [r["image"] for r in records], [r["mask_channel"] for r in records]
        small = [r["id"] for r in records if any(s < p for s, p in zip(r["image"].shape[1:], size))]
        if small:
            raise ValueError(f"{len(small)} training images (e.g. {small[0]}) are smaller than train.patch_size "
                             f"{size}; with train.cache store they are read as stored, not padded")
    else:
        # a volume smaller than the patch along some axis (a tight head crop) is padded, not an error
        images = [pad_to(r["image"], size) for r in records]
        masks = [pad_to(r["mask_channel"], size).astype(np.uint8 if num_classes < 256 else np.int64) for r in records]
    if train_cfg.get("patch_sampling") == "pos_neg":
        ratios = [1.0, train_cfg["pos_neg_ratio"]]
        groups = ([m[0] == 0, m[0] > 0] for m in map(np.asarray, masks))
    else:
        ratios = train_cfg.get("class_sampling_ratios") or [1] * num_classes
        if len(ratios) != num_classes:
            raise ValueError(f"train.class_sampling_ratios has {len(ratios)} entries; the domain has {num_classes} "
                             "classes (background first)")
        groups = ([m[0] == c for c in range(num_classes)] for m in map(np.asarray, masks))
    ppi = train_cfg["patches_per_image"]
    # groups is a generator: one image's candidate masks in memory at a time
    crops = Crops.from_groups(size, groups, ratios)
    return TrainBatches(images, masks, None, max(1, train_cfg["batch_size"] // ppi), augment, device,
                        train_cfg["cache"], crops, ppi, rank=rank, world=world)


IMBALANCE_STRATEGIES = ("none", "balanced_sampler", "weighted_ce", "focal")


def class_counts(labels, n_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)


def inverse_frequency_weights(labels, n_classes: int) -> np.ndarray:
    """n / (k * n_c) per class: 1 for every class when balanced; absent classes get weight 0."""
    counts = class_counts(labels, n_classes).astype(np.float64)
    return np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)


def classification_batches(records: list[dict], n_classes: int, train_cfg: dict, augment: BatchAugment,
                           device, rank: int = 0, world: int = 1) -> TrainBatches:
    """Images with their labels: whole, or (train.object_crops) patch_size crops centred on the object
    in positive images with an object mask and anywhere in the imaged part of the others, so that
    "the crop is all tissue" is no cue for "positive". A network ending in global pooling then learns
    from many views of few positives and still runs on whole images at evaluation (Shen et al. 2019,
    Sci Rep 9:12495: patch classifier first, whole image after). With imbalance balanced_sampler
    every class is drawn equally often in expectation (with replacement)."""
    from sciconv.batches import Crops, TrainBatches

    shapes = {r["image"].shape for r in records}
    if len(shapes) > 1 and not train_cfg["object_crops"]:
        raise ValueError(f"training images differ in shape ({', '.join(map(str, sorted(shapes)[:3]))}, ...); "
                         "a classifier batches whole images: set preprocess.size so they are resized alike")
    labels = np.array([int(r["label"]) for r in records], dtype=np.int64)
    crops = None
    if train_cfg["object_crops"]:
        size = list(train_cfg["patch_size"])
        for shape in shapes:
            if any(r > s for r, s in zip(size, shape[1:])):
                raise ValueError(f"train.patch_size {size} is larger than the images {list(shape[1:])}; "
                                 "object crops must fit inside them")
        def centres(record):
            mask = np.asarray(record["mask_channel"]) if record.get("mask_channel") is not None else None
            if mask is not None and int(record["label"]) > 0 and mask.any():
                return [mask[0] > 0]
            first = record["image"][0]
            return [first > first.min()]
        crops = Crops.from_groups(size, map(centres, records), [1.0])
    weights = (inverse_frequency_weights(labels, n_classes)[labels]
               if train_cfg["imbalance"] == "balanced_sampler" else None)
    return TrainBatches([r["image"] for r in records], None, labels, train_cfg["batch_size"], augment, device,
                        train_cfg["cache"], crops, weights=weights, drop_last=len(records) > train_cfg["batch_size"],
                        rank=rank, world=world)


def dataset_statistics(sets: dict[str, list[dict]], class_names: list[str], task) -> dict:
    """Per set: sample count, the task's counts per class (labels, or mask pixels for segmentation) and an
    intensity summary; `task` is the task class (sciconv.tasks.base.Task)."""
    out = {}
    for name, records in sets.items():
        if not records:
            out[name] = {"n": 0}
            continue
        # a strided subsample of each image, one image read at a time (they may still be in the store)
        values = np.concatenate([np.asarray(r["image"]).ravel()[:: max(1, int(np.prod(r["image"].shape)) // 20000)]
                                 for r in records])
        entry = {"n": len(records), "image_shape": list(records[0]["image"].shape),
                 "intensity": {"mean": float(values.mean()), "std": float(values.std()),
                               **{f"p{q}": float(np.percentile(values, q)) for q in (1, 50, 99)}}}
        counts = [task.class_counts(None if r.get("mask_channel") is None else np.asarray(r["mask_channel"]), r.get("label"),
                                    len(class_names)) for r in records]
        if counts and counts[0] is not None:
            entry[task.count_name()] = dict(zip(class_names, np.sum(counts, axis=0).tolist()))
        out[name] = entry
    return out
