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
from monai.transforms import ClassesToIndicesd, Compose, EnsureTyped, RandCropByLabelClassesd

from sciconv.store import StoreReader


def load_split(path: Path | str) -> dict[str, list[str]]:
    return json.loads(Path(path).read_text())


def load_records(store_path: Path | str, ids: list[str]) -> list[dict]:
    """One dict per sample: image (C, *spatial), mask as a channel (1, *spatial), id and attributes."""
    records = []
    with StoreReader(store_path) as store:
        for sample_id in ids:
            sample = store.sample(sample_id)
            record = {"image": sample.image.astype(np.float32), "id": sample.id, "attrs": sample.attrs}
            if sample.mask is not None:
                record["mask"] = sample.mask[None].astype(np.int64)
            records.append(record)
    return records


def fixed_transforms(num_classes: int) -> list:
    """Deterministic, cached once: typing and the per-class voxel indices the patch sampler needs."""
    return [EnsureTyped(keys=["image", "mask"], track_meta=False),
            ClassesToIndicesd(keys="mask", num_classes=num_classes, indices_postfix="_cls_indices")]


def random_transforms(num_classes: int, patch_size, patches_per_image: int, ratios, augment: list) -> Compose:
    """Patch sampling centred on classes in the configured ratios (so the rare class is seen), then augmentation."""
    return Compose([
        RandCropByLabelClassesd(keys=["image", "mask"], label_key="mask", spatial_size=list(patch_size),
                                ratios=list(ratios), num_classes=num_classes, num_samples=patches_per_image,
                                indices_key="mask_cls_indices", warn=False),
        *augment,
    ])


def segmentation_train_loader(records: list[dict], num_classes: int, train_cfg: dict, augment: list,
                              num_workers: int = 0) -> tuple[DataLoader, Compose]:
    ratios = train_cfg.get("class_sampling_ratios") or [1] * num_classes
    if len(ratios) != num_classes:
        raise ValueError(f"train.class_sampling_ratios has {len(ratios)} entries; the domain has {num_classes} "
                         "classes (background first)")
    random_part = random_transforms(num_classes, train_cfg["patch_size"], train_cfg["patches_per_image"],
                                    ratios, augment)
    dataset = CacheDataset([{k: r[k] for k in ("image", "mask")} for r in records],
                           transform=Compose(fixed_transforms(num_classes) + list(random_part.transforms)),
                           cache_rate=1.0, num_workers=0, progress=False, copy_cache=False)
    loader = DataLoader(dataset, batch_size=max(1, train_cfg["batch_size"] // train_cfg["patches_per_image"]),
                        shuffle=True, num_workers=num_workers, drop_last=False)
    return loader, dataset.transform
