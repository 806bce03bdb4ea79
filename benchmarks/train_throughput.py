"""Training throughput, three ways, same model, same data, same number of steps, in one process.

    python benchmarks/train_throughput.py                          # full configs, on the GPU
    python benchmarks/train_throughput.py --device cpu --quick     # small sizes on CPU (< 10 min on 2 cores)
    python benchmarks/train_throughput.py --datasets mri_seg_full --steps 50

For each built-in dataset's full config (config/datasets/<name>_full.yaml; --quick shrinks sizes
and networks so a CPU can run it), the data is simulated, ingested and preprocessed once by the
real sciconv steps in a scratch project (--workdir), then trained for the same steps by
  naive    the regular MONAI path: a MONAI Dataset over the raw files, reading and preprocessing
           every sample every time, random transforms on the CPU, DataLoader(num_workers=k), fp32;
  fast     MONAI's fast-training recipe: CacheDataset of the deterministic part moved to the
           device (EnsureTyped(device=...)), random transforms on the device, ThreadDataLoader
           (num_workers=0), AMP (fp16 + GradScaler), set_track_meta(False);
  sciconv  `sciconv train`'s default path (sciconv.batches + sciconv.augment: samples cached on
           the device, whole batches augmented at once; bf16 autocast and channels-last on a GPU).
Each starts from the same initial weights; warm-up steps (cuDNN autotuning, caches) are not timed;
the paths run in interleaved rounds (--repeats) and each keeps its best round.
Prints per dataset one line with samples/s of each path, ratio_vs_naive and ratio_vs_fast, the
fraction of step time spent waiting for data, peak GPU memory and achieved TFLOP/s (FLOPs of
forward plus backward counted by torch.utils.flop_counter) beside the device's measured
matrix-multiply rate (bf16 on a GPU, fp32 on CPU), then a Markdown table. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("ccd_full", "mammo_full", "lightcone_full", "lightcone_cls_full", "mri_seg_full", "mri_cls_full")

# --quick: the full configs at sizes a 2-core CPU trains in seconds per step (dotted keys -> values)
QUICK = {
    "ccd_full": {"source.n_frames": 16, "source.frame_size": [128, 128], "train.patch_size": [64, 64],
                 "train.batch_size": 8, "train.patches_per_image": 2, "model.channels": [16, 32, 64, 128]},
    "mammo_full": {"source.n_patients": 6, "source.image_size": [256, 208], "preprocess.size": [128, 104],
                   "train.patch_size": [64, 64], "train.batch_size": 8, "model.name": "densenet", "model.init_features": 16,
                   "model.growth_rate": 8, "model.block_config": [2, 2, 2]},
    "lightcone_full": {"source.n_samples": 16, "source.sky_cells": 16, "source.n_coeval": 4,
                       "source.n_filter_scales": 4, "train.batch_size": 8},
    "lightcone_cls_full": {"source.n_samples": 16, "source.sky_cells": 16, "source.n_coeval": 4,
                           "source.n_filter_scales": 4, "train.batch_size": 8},
    "mri_seg_full": {"source.n_subjects": 6, "source.voxel_sizes_mm": [[4, 4, 4]], "preprocess.spacing_mm": [4, 4, 4],
                     "train.patch_size": [32, 32, 32], "train.batch_size": 4, "train.patches_per_image": 2,
                     "model.channels": [8, 16, 32, 64], "model.strides": [2, 2, 2]},
    "mri_cls_full": {"source.n_subjects": 8, "source.voxel_sizes_mm": [[4, 4, 4]], "preprocess.spacing_mm": [4, 4, 4],
                     "preprocess.size": [40, 48, 40], "train.patch_size": [32, 32, 32], "train.batch_size": 4},
}


def set_dotted(cfg: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        cfg = cfg.setdefault(key, {})
    cfg[leaf] = value


def prepare(name: str, work: Path, quick: bool, samples: int | None, seed: int):
    """Simulate, ingest, split and preprocess the dataset with sciconv's own steps; the loaded config."""
    from sciconv.config import load_dataset, load_global
    from sciconv.steps import ingest, preprocess, simulate, split

    cfg = yaml.safe_load((REPO / f"config/datasets/{name}.yaml").read_text())
    for dotted, value in (QUICK[name] if quick else {}).items():
        set_dotted(cfg, dotted, value)
    (work / "config/datasets").mkdir(parents=True, exist_ok=True)
    from sciconv.domains import get_domain

    if samples:
        cfg["source"][get_domain(cfg["domain"]).sample_count_key] = samples
    (work / f"config/datasets/{name}.yaml").write_text(yaml.safe_dump(cfg))
    (work / "config/config.yaml").write_text(yaml.safe_dump({"datasets": [name], "seed": seed, "device": "auto",
                                                             "results_dir": str(work / "results"),
                                                             "mlflow_tracking_uri": f"sqlite:///{work}/mlflow.db"}))
    ds = load_dataset(str(work / f"config/datasets/{name}.yaml"), load_global(str(work / "config/config.yaml")))
    if not (Path(ds.results_dir) / "preprocessed.h5").is_file():
        for step in (simulate, ingest, split, preprocess):
            step.run(ds)
    return ds


# --------------------------------------------------------------------------- the MONAI paths
def raw_items(ds, records: list[dict], targets: np.ndarray | None) -> list[dict]:
    """One dict per training sample naming its raw files, with its label or standardised target."""
    from sciconv import sources

    rows = {str(Path(r["image"])): r for r in sources.input_rows(ds)}
    items = []
    for i, record in enumerate(records):
        row = rows[str(record["attrs"]["source"])]
        item = {"row": row}
        if record.get("label") is not None:
            item["label"] = np.int64(record["label"])
        if targets is not None:
            item["target"] = targets[i]
        items.append(item)
    return items


def load_and_preprocess(ds):
    """A MONAI transform doing what ingest + preprocess do for one sample: read the raw file, preprocess it."""
    from monai.transforms import MapTransform

    from sciconv import io as readers

    class LoadPreprocessd(MapTransform):
        def __init__(self):
            super().__init__(keys=["row"])

        def __call__(self, item):
            row = item["row"]
            image, meta, mask, _ = readers.read_source(row["image"], row.get("mask"), ds.cfg["source"])
            mask, _ = ds.task.stored_mask(mask, ds.cfg)
            image, mask, _ = ds.domain.preprocess(image, meta, ds.cfg["preprocess"], mask=mask)
            out = {k: v for k, v in item.items() if k != "row"}
            out["image"] = image.astype(np.float32)
            if mask is None and ds.cfg["train"].get("object_crops"):
                mask = np.zeros(image.shape[1:], np.int64)  # a negative: the crop transform still finds its key
            if mask is not None:
                out["mask"] = mask[None].astype(np.int64)
            return out

    return LoadPreprocessd()


def random_part(ds, cached_indices: bool) -> tuple[list, list]:
    """(deterministic index transforms for the cache, random crop + augmentation), as MONAI transforms."""
    from monai.transforms import (ClassesToIndicesd, FgBgToIndicesd, RandCropByLabelClassesd, RandCropByPosNegLabeld,
                                  SpatialPadd)

    from sciconv.augment import monai_transforms

    cfg, train = ds.cfg, ds.cfg["train"]
    specs = ds.domain.augment_specs(cfg["augment"])
    if cfg["task"] == "segmentation":
        size, n = list(train["patch_size"]), train["patches_per_image"]
        pad = [SpatialPadd(["image", "mask"], spatial_size=size)]
        if train["patch_sampling"] == "pos_neg":
            index = [FgBgToIndicesd("mask")] if cached_indices else []
            crop = RandCropByPosNegLabeld(["image", "mask"], "mask", size, pos=train["pos_neg_ratio"], neg=1.0,
                                          num_samples=n, **({"fg_indices_key": "mask_fg_indices",
                                                             "bg_indices_key": "mask_bg_indices"} if cached_indices else {}))
        else:
            k = len(ds.class_names)
            ratios = train.get("class_sampling_ratios") or [1] * k
            index = [ClassesToIndicesd("mask", num_classes=k, indices_postfix="_cls_indices")] if cached_indices else []
            crop = RandCropByLabelClassesd(["image", "mask"], "mask", size, ratios=list(ratios), num_classes=k,
                                           num_samples=n, warn=False,
                                           **({"indices_key": "mask_cls_indices"} if cached_indices else {}))
        return pad + index, [crop, *monai_transforms(specs, keys=("image", "mask"))]
    if train.get("object_crops"):
        # MONAI's nearest stock transform to object-centred crops: centred on the object when there is one
        crop = RandCropByPosNegLabeld(["image"], "mask", list(train["patch_size"]), pos=1.0, neg=0.0,
                                      num_samples=1, allow_smaller=False)
        return [], [crop, *monai_transforms(specs, keys=("image",))]
    return [], monai_transforms(specs, keys=("image",))


def monai_loader(ds, items: list[dict], batch: int, device: torch.device, fast: bool, workers: int):
    from monai.data import CacheDataset, DataLoader, Dataset, ThreadDataLoader
    from monai.transforms import Compose, EnsureTyped

    fixed, rand = random_part(ds, cached_indices=fast)
    load = load_and_preprocess(ds)
    has_mask = ds.cfg["task"] == "segmentation" or ds.cfg["train"].get("object_crops")
    keys = ["image", "mask"] if has_mask else ["image"]
    if fast:
        typed = EnsureTyped(keys, device=device, track_meta=False)
        dataset = CacheDataset(items, Compose([load, typed, *fixed, *rand]), cache_rate=1.0,
                               num_workers=None, progress=False, copy_cache=False)
        return ThreadDataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0)
    dataset = Dataset(items, Compose([load, EnsureTyped(keys, track_meta=True), *fixed, *rand]))
    return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)


# --------------------------------------------------------------------------- timing
def matmul_tflops(device: torch.device) -> float:
    """The device's measured dense matrix-multiply rate: bf16 on a GPU, fp32 on CPU."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    repeats = 20 if device.type == "cuda" else 5
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_sample(net, loss_fn, inputs, targets) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(net(inputs), targets).backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / inputs.shape[0]


def timed_steps(batches, net, loss_fn, device, steps: int, warmup: int, precision: str, memory_format=None) -> dict:
    """Train `steps` steps after `warmup` untimed ones; samples/s, data-wait fraction, peak memory."""
    from sciconv.steps.train import build_optimizer

    optimizer = build_optimizer(net.parameters(), {"optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4})
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    net.train()
    source = iter(batches())
    samples, waited, started = 0, 0.0, None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            started, samples, waited = time.perf_counter(), 0, 0.0
        asked = time.perf_counter()
        try:
            inputs, targets = next(source)
        except StopIteration:  # a new epoch
            source = iter(batches())
            inputs, targets = next(source)
        if memory_format is not None:
            inputs = inputs.contiguous(memory_format=memory_format)
        waited += time.perf_counter() - asked
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(net(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        samples += inputs.shape[0]
    sync(device)
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"samples_s": samples / elapsed, "data_wait": waited / elapsed, "peak_gb": peak}


def monai_batches(loader, task: str, device: torch.device):
    def batches():
        for batch in loader:
            image = torch.as_tensor(batch["image"]).to(device, non_blocking=True)
            if task == "segmentation":
                yield image, torch.as_tensor(batch["mask"]).to(device, non_blocking=True)
            elif task == "classification":
                yield image, torch.as_tensor(batch["label"]).to(device, non_blocking=True).long()
            else:
                yield image, torch.as_tensor(batch["target"]).to(device, non_blocking=True).float()
    return batches


def benchmark(ds, device: torch.device, steps: int, warmup: int, workers: int, peak: float, repeats: int) -> dict:
    from monai.data import set_track_meta

    from sciconv import data, models
    from sciconv.augment import BatchAugment
    from sciconv.steps.train import memory_format_for
    from sciconv.tasks import task_for

    cfg = ds.cfg
    split = data.load_split(Path(ds.results_dir) / "split.json")
    ids = split["train"] + split["val"] + split["test"]  # every sample: the benchmark only trains
    records = data.load_records(Path(ds.results_dir) / "preprocessed.h5", ids)
    task = task_for(cfg["task"])(cfg, ds.class_names, records, records[:2])
    args = models.model_args(cfg["model"], records[0]["image"].ndim - 1, records[0]["image"].shape[0],
                             len(ds.class_names))
    torch.manual_seed(0)
    initial = models.build(args).state_dict()
    targets = ((task.train_targets - task.mean) / task.std).astype(np.float32) if cfg["task"] == "regression" else None
    items = raw_items(ds, records, targets)
    per_step = cfg["train"]["batch_size"]
    images_per_batch = max(1, per_step // cfg["train"]["patches_per_image"]) if cfg["task"] == "segmentation" else per_step

    def fresh_net(memory_format=None):
        net = models.build(args)
        net.load_state_dict(initial)
        net = net.to(device)
        return net.to(memory_format=memory_format) if memory_format is not None else net

    amp = device.type == "cuda"
    batches = task.train_batches(BatchAugment(ds.domain.augment_specs(cfg["augment"])), device)
    precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if amp else "fp32"
    memory_format = memory_format_for(device, records[0]["image"].ndim - 1, cfg["train"])
    epoch = iter(range(10**9))

    def sciconv_batches():
        batches.set_epoch(next(epoch))
        return iter(batches)

    set_track_meta(True)
    naive = monai_batches(monai_loader(ds, items, images_per_batch, device, fast=False, workers=workers),
                          cfg["task"], device)
    fast = monai_batches(monai_loader(ds, items, images_per_batch, device, fast=True, workers=0), cfg["task"], device)
    paths = {"naive": (naive, "fp32", None, True), "fast": (fast, "fp16" if amp else "fp32", None, False),
             "sciconv": (sciconv_batches, precision, memory_format, True)}
    results: dict[str, dict] = {}
    # interleaved rounds, the best of each: a shared machine's noise slows runs, it never speeds them up
    for _ in range(repeats):
        for path, (source, path_precision, path_format, track_meta) in paths.items():
            set_track_meta(track_meta)  # the fast recipe turns it off after caching, as MONAI's tutorial does
            r = timed_steps(source, fresh_net(path_format), task.loss, device, steps, warmup, path_precision,
                            path_format)
            if path not in results or r["samples_s"] > results[path]["samples_s"]:
                results[path] = r
    set_track_meta(True)
    inputs, targets = next(sciconv_batches())
    flops = flops_per_sample(fresh_net(), task.loss, inputs.float(), targets)
    return {"dataset": ds.name, "device": device_name(device), "steps": steps,
            "sample_shape": list(inputs.shape[1:]), "samples_per_step": per_step, **{
                f"{path}_{key}": value for path, r in results.items() for key, value in r.items()},
            "ratio_vs_naive": results["sciconv"]["samples_s"] / results["naive"]["samples_s"],
            "ratio_vs_fast": results["sciconv"]["samples_s"] / results["fast"]["samples_s"],
            "sciconv_tflops": flops * results["sciconv"]["samples_s"] / 1e12, "peak_matmul_tflops": peak,
            "sciconv_precision": precision}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def line(r: dict) -> str:
    return (f"dataset={r['dataset']} samples_s naive={r['naive_samples_s']:.2f} fast={r['fast_samples_s']:.2f} "
            f"sciconv={r['sciconv_samples_s']:.2f} ratio_vs_naive={r['ratio_vs_naive']:.2f} "
            f"ratio_vs_fast={r['ratio_vs_fast']:.2f} data_wait naive={r['naive_data_wait']:.2f} "
            f"fast={r['fast_data_wait']:.2f} sciconv={r['sciconv_data_wait']:.3f} "
            f"peak_gpu_gb={r['sciconv_peak_gb']:.2f} tflops={r['sciconv_tflops']:.3f} "
            f"of_matmul_peak={r['peak_matmul_tflops']:.2f}")


def table(rows: list[dict]) -> str:
    head = ("| dataset | sample | naive /s | fast /s | sciconv /s | vs naive | vs fast | data wait (naive, fast, "
            "sciconv) | peak GPU GiB (naive, fast, sciconv) | TFLOP/s | matmul peak |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append(f"| {r['dataset']} | {'x'.join(map(str, r['sample_shape']))} | {r['naive_samples_s']:.1f} | "
                   f"{r['fast_samples_s']:.1f} | {r['sciconv_samples_s']:.1f} | {r['ratio_vs_naive']:.2f} | "
                   f"{r['ratio_vs_fast']:.2f} | {r['naive_data_wait']:.2f}, {r['fast_data_wait']:.2f}, "
                   f"{r['sciconv_data_wait']:.3f} | {r['naive_peak_gb']:.2f}, {r['fast_peak_gb']:.2f}, "
                   f"{r['sciconv_peak_gb']:.2f} | {r['sciconv_tflops']:.3f} | {r['peak_matmul_tflops']:.2f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes and networks (for a CPU)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated (default: all six)")
    parser.add_argument("--steps", type=int, help="timed steps per path and round (default 40 on a GPU, 10 with --quick)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; each path's best is kept")
    parser.add_argument("--samples", type=int, help="simulated samples per dataset (default: 48, --quick: QUICK)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="naive DataLoader workers")
    parser.add_argument("--workdir", default="benchmark-throughput")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    steps = args.steps or (10 if args.quick else 40)
    samples = args.samples or (None if args.quick else 48)
    work = Path(args.workdir).resolve() / ("quick" if args.quick else "full")
    peak = matmul_tflops(device)
    print(f"device={device_name(device)} torch={torch.__version__} matmul_peak_tflops={peak:.2f} steps={steps}",
          flush=True)
    rows = []
    for name in args.datasets.split(","):
        ds = prepare(name, work, args.quick, samples, args.seed)
        rows.append(benchmark(ds, device, steps, args.warmup, args.workers, peak, args.repeats))
        print(line(rows[-1]), flush=True)
    print()
    print(table(rows))
    (work / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
