"""Datasets for training and evaluation: preprocessed.h5 + split.json -> MONAI datasets.

Following MONAI's split of fixed and random transforms: the fixed ones run
once and are cached (CacheDataset); the random ones (patch sampling,
augmentation) run after the cache every epoch. Validation and test reuse the
fixed list only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from monai.data import CacheDataset, DataLoader
from monai.transforms import ClassesToIndicesd, Compose, EnsureTyped, MapTransform, RandCropByLabelClassesd, Randomizable

from sciconv.store import StoreReader


def load_split(path: Path | str) -> dict[str, list[str]]:
    return json.loads(Path(path).read_text())


def load_records(store_path: Path | str, ids: list[str]) -> list[dict]:
    """One dict per sample: image (C, *spatial), mask as a channel (1, *spatial), id and attributes."""
    records = []
    with StoreReader(store_path) as store:
        for sample_id in ids:
            sample = store.sample(sample_id)
            record = {"image": sample.image.astype(np.float32), "id": sample.id, "attrs": sample.attrs,
                      "label": sample.attrs.get("label")}
            if sample.mask is not None:
                record["mask"] = sample.mask[None].astype(np.int64)
            records.append(record)
    return records


def fixed_transforms(num_classes: int, patch_size, sampling: str = "class_ratios") -> list:
    """Deterministic, cached once: typing, padding up to the patch size, and the voxel indices the patch sampler needs."""
    from monai.transforms import FgBgToIndicesd, SpatialPadd

    indices = (FgBgToIndicesd(keys="mask") if sampling == "pos_neg" else
               ClassesToIndicesd(keys="mask", num_classes=num_classes, indices_postfix="_cls_indices"))
    return [EnsureTyped(keys=["image", "mask"], track_meta=False),
            # a volume smaller than the patch along some axis (a tight head crop) is padded, not an error
            SpatialPadd(keys=["image", "mask"], spatial_size=list(patch_size)),
            indices]


def patch_sampler(num_classes: int, train_cfg: dict):
    """Patch sampling centred on classes in the configured ratios, or on foreground vs background (pos_neg)."""
    from monai.transforms import RandCropByPosNegLabeld

    size, n = list(train_cfg["patch_size"]), train_cfg["patches_per_image"]
    if train_cfg.get("patch_sampling") == "pos_neg":
        return RandCropByPosNegLabeld(keys=["image", "mask"], label_key="mask", spatial_size=size,
                                      pos=train_cfg["pos_neg_ratio"], neg=1.0, num_samples=n,
                                      fg_indices_key="mask_fg_indices", bg_indices_key="mask_bg_indices")
    ratios = train_cfg.get("class_sampling_ratios") or [1] * num_classes
    if len(ratios) != num_classes:
        raise ValueError(f"train.class_sampling_ratios has {len(ratios)} entries; the domain has {num_classes} "
                         "classes (background first)")
    return RandCropByLabelClassesd(keys=["image", "mask"], label_key="mask", spatial_size=size, ratios=list(ratios),
                                   num_classes=num_classes, num_samples=n, indices_key="mask_cls_indices", warn=False)


def segmentation_train_loader(records: list[dict], num_classes: int, train_cfg: dict, augment: list,
                              num_workers: int = 0) -> tuple[DataLoader, Compose]:
    """Fixed transforms cached once (CacheDataset); patch sampling and augmentation run after the cache."""
    fixed = fixed_transforms(num_classes, train_cfg["patch_size"], train_cfg.get("patch_sampling", "class_ratios"))
    random_part = [patch_sampler(num_classes, train_cfg), *augment]
    dataset = CacheDataset([{k: r[k] for k in ("image", "mask")} for r in records],
                           transform=Compose(fixed + random_part),
                           cache_rate=1.0, num_workers=0, progress=False, copy_cache=False)
    loader = DataLoader(dataset, batch_size=max(1, train_cfg["batch_size"] // train_cfg["patches_per_image"]),
                        shuffle=True, num_workers=num_workers, drop_last=False)
    return loader, dataset.transform


IMBALANCE_STRATEGIES = ("none", "balanced_sampler", "weighted_ce", "focal")


def class_counts(labels, n_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)


def inverse_frequency_weights(labels, n_classes: int) -> np.ndarray:
    """n / (k * n_c) per class: 1 for every class when balanced; absent classes get weight 0."""
    counts = class_counts(labels, n_classes).astype(np.float64)
    return np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)


def balanced_sampler(labels, n_classes: int):
    """Draws each class equally often in expectation (with replacement), one epoch = len(labels) draws.

    Uses torch's global generator, which the training loop seeds per epoch, so a resumed run
    draws the same samples.
    """
    import torch
    from torch.utils.data import WeightedRandomSampler

    per_sample = inverse_frequency_weights(labels, n_classes)[np.asarray(labels, dtype=np.int64)]
    return WeightedRandomSampler(torch.as_tensor(per_sample, dtype=torch.double), num_samples=len(labels),
                                 replacement=True)


class ObjectCentredCropd(Randomizable, MapTransform):
    """A training crop for an image-level label: around the object in positive images, anywhere in negative ones.

    Positive images with an object mask (a lesion outline) are cropped around a random object
    pixel, so the crop still holds what makes the image positive; other images around a random
    pixel of the imaged part (above the image's minimum, i.e. not the air around a breast), so
    that "the crop is all tissue" is no cue for "positive". A network that ends in global pooling then learns from many views of
    few positives, and still runs on whole images at evaluation (Shen et al. 2019, Sci Rep
    9:12495: patch classifier first, whole image after).
    """

    def __init__(self, keys, roi_size):
        MapTransform.__init__(self, keys)
        self.roi_size = list(roi_size)
        self._offset: list[int] = []

    def randomize(self, shape, where) -> None:
        points = np.argwhere(where)
        if len(points):
            centre = points[self.R.randint(len(points))]
            start = [int(np.clip(c - r // 2, 0, s - r)) for c, r, s in zip(centre, self.roi_size, shape)]
        else:
            start = [int(self.R.randint(0, s - r + 1)) for r, s in zip(self.roi_size, shape)]
        self._offset = start

    def __call__(self, sample):
        out = dict(sample)
        shape = out["image"].shape[1:]
        if any(s < r for s, r in zip(shape, self.roi_size)):
            raise ValueError(f"train.patch_size {self.roi_size} is larger than the images {list(shape)}")
        mask = out.get("mask")
        if mask is not None and int(out["label"]) > 0 and np.asarray(mask).any():
            where = np.asarray(mask)[0] > 0
        else:
            first = np.asarray(out["image"][0])
            where = first > first.min()
        self.randomize(shape, where)
        window = (slice(None),) + tuple(slice(o, o + r) for o, r in zip(self._offset, self.roi_size))
        for key in self.key_iterator(out):
            out[key] = out[key][window]
        return out


def classification_train_loader(records: list[dict], n_classes: int, train_cfg: dict, augment: list,
                                num_workers: int = 0) -> tuple[DataLoader, Compose]:
    """Images with their labels (whole, or crops centred on the object with train.object_crops);
    the class-balanced sampler when train.imbalance asks for it."""
    shapes = {r["image"].shape for r in records}
    if len(shapes) > 1 and not train_cfg["object_crops"]:
        raise ValueError(f"training images differ in shape ({', '.join(map(str, sorted(shapes)[:3]))}, ...); "
                         "a classifier batches whole images: set preprocess.size so they are resized alike")
    labels = [int(r["label"]) for r in records]
    keys = ["image"]
    items = [{"image": r["image"], "label": np.int64(r["label"])} for r in records]
    crop = []
    if train_cfg["object_crops"]:
        spatial = next(iter(shapes))[1:]
        if any(r > s for r, s in zip(train_cfg["patch_size"], spatial)):
            raise ValueError(f"train.patch_size {list(train_cfg['patch_size'])} is larger than the images "
                             f"{list(spatial)}; object crops must fit inside them")
        for item, record in zip(items, records):
            # every item has a mask key (empty for negatives) so the dictionaries collate alike
            item["mask"] = record["mask"] if record.get("mask") is not None else np.zeros((1, *spatial), np.int64)
        keys = ["image", "mask"]
        crop = [ObjectCentredCropd(keys, train_cfg["patch_size"])]
    dataset = CacheDataset(items, transform=Compose([EnsureTyped(keys=keys, track_meta=False), *crop, *augment]),
                           cache_rate=1.0, num_workers=0, progress=False, copy_cache=False)
    sampler = balanced_sampler(labels, n_classes) if train_cfg["imbalance"] == "balanced_sampler" else None
    loader = DataLoader(dataset, batch_size=train_cfg["batch_size"], shuffle=sampler is None, sampler=sampler,
                        num_workers=num_workers, drop_last=len(records) > train_cfg["batch_size"])
    return loader, dataset.transform


def dataset_statistics(sets: dict[str, list[dict]], class_names: list[str], task: str) -> dict:
    """Per set: sample count, counts per class (labels, or mask pixels for segmentation) and an intensity summary."""
    out = {}
    for name, records in sets.items():
        if not records:
            out[name] = {"n": 0}
            continue
        values = np.concatenate([r["image"].ravel()[:: max(1, r["image"].size // 20000)] for r in records])
        entry = {"n": len(records), "image_shape": list(records[0]["image"].shape),
                 "intensity": {"mean": float(values.mean()), "std": float(values.std()),
                               **{f"p{q}": float(np.percentile(values, q)) for q in (1, 50, 99)}}}
        if task == "classification":
            counts = class_counts([int(r["label"]) for r in records], len(class_names))
            entry["per_class"] = dict(zip(class_names, counts.tolist()))
        elif task == "segmentation":
            pixels = sum(np.bincount(r["mask"].ravel(), minlength=len(class_names))[: len(class_names)] for r in records)
            entry["pixels_per_class"] = dict(zip(class_names, np.asarray(pixels).tolist()))
        out[name] = entry
    return out
