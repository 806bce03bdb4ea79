"""The planner: a dataset's fingerprint and the training device -> the settings its YAML left out.

Precedence, decided here alone: a key written in the dataset YAML (or given with --set) always
wins; every key the plan sets and the YAML leaves out takes the plan's value; the rest keep their
schema or domain default. `origins` says which of the three each setting came from, with the plan's
reason, for `sciconv inspect`.

What is planned and how is the task's (`Task.plan`, in sciconv/tasks/): this module holds what the
tasks share, the measurements. Memory per sample is measured by a forward and backward pass on a
GPU and estimated by formula on a CPU (which has no allocator to ask); the time of a training step
is always measured, on the device training will use, because a guess at it is wrong by 10x between
a laptop core and an H200.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ANISOTROPY_RATIO = 3.0      # nnU-Net: an axis this much coarser than the finest is "out of plane"
MIN_EPOCHS_WANTED = 20      # below this many epochs in the budget, the patch shrinks before the epochs do
BATCH_LIMITS = {2: (2, 32), 3: (2, 8)}
DATASET_SHARE_PER_BATCH = 0.05   # nnU-Net: one batch covers at most 5% of the dataset's voxels
# of train.time_budget_min: the rest is what a bare step misses: augmentation, data movement, start-up and
# the final save (an epoch of the CCD demo data on 2 CPU cores took 1.2-1.7x the bare steps' time)
BUDGET_FOR_TRAINING = 0.75


class PlanError(ValueError):
    """The data or the device cannot be planned for; the message says what to change."""


@dataclass
class Decision:
    value: object
    reason: str


@dataclass
class Plan:
    settings: dict[str, Decision] = field(default_factory=dict)
    measured: dict = field(default_factory=dict)

    def set(self, key: str, value, reason: str) -> None:
        self.settings[key] = Decision(value, reason)

    def to_json(self) -> dict:
        return {"settings": {k: {"value": d.value, "reason": d.reason} for k, d in self.settings.items()},
                "measured": self.measured}


# --------------------------------------------------------------------------- precedence
def written(ds, key: str) -> bool:
    """True when the dataset YAML or a --set wrote `key` (or a whole section above it)."""
    value = ds.raw
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def _put(cfg: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        cfg = cfg.setdefault(part, {})
    cfg[leaf] = copy.deepcopy(value)


def read_plan(path: Path | str) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def apply(ds, plan: dict | None):
    """The DatasetConfig with the plan's values under every key the YAML left out."""
    if not plan:
        return ds
    cfg = copy.deepcopy(ds.cfg)
    for key, decision in plan["settings"].items():
        if not written(ds, key):
            _put(cfg, key, decision["value"])
    return replace(ds, cfg=cfg)


def with_plan(ds):
    """`ds` with results/<dataset>/plan.json applied, when the plan step has run."""
    from sciconv.paths import DatasetPaths

    return apply(ds, read_plan(DatasetPaths(ds.results_dir).plan))


def origins(ds, plan: dict | None, sections=("preprocess", "model", "train")) -> list[tuple[str, object, str, str]]:
    """(key, value, origin, reason) for every setting of `sections`: origin yaml, plan or default."""
    from sciconv.config import flatten

    planned = (plan or {}).get("settings", {})
    effective = apply(ds, plan).cfg
    rows = []
    for key, value in flatten({s: effective.get(s, {}) for s in sections}).items():
        if written(ds, key):
            origin, reason = "yaml", ""
        elif key in planned:
            origin, reason = "plan", planned[key]["reason"]
        else:
            origin, reason = "default", ""
        rows.append((key, value, origin, reason))
    for key in sorted(set(planned) - {r[0] for r in rows}):
        if not written(ds, key):
            rows.append((key, planned[key]["value"], "plan", planned[key]["reason"]))
    return rows


# --------------------------------------------------------------------------- spacing
def target_spacing(spacings: list[list[float]]) -> tuple[list[float], str]:
    """nnU-Net's rule: the median spacing per axis; where one axis is over ANISOTROPY_RATIO times coarser
    than the finest, its 10th percentile instead, so the few fine scans keep detail the many coarse
    ones would average away (Isensee et al. 2021, the 'lowres axis' rule)."""
    values = np.asarray(spacings, dtype=float)
    median = np.median(values, 0)
    coarse = int(np.argmax(median))
    if median[coarse] > ANISOTROPY_RATIO * median.min():
        median[coarse] = np.percentile(values[:, coarse], 10)
        return median.round(4).tolist(), (f"median spacing, but axis {coarse} is over {ANISOTROPY_RATIO:g}x coarser "
                                          "than the finest: its 10th percentile (nnU-Net's anisotropy rule)")
    return median.round(4).tolist(), f"median spacing of {len(values)} samples"


# --------------------------------------------------------------------------- the device
def memory_budget_bytes(train_cfg: dict, device) -> tuple[int, str]:
    """What a training batch may use: train.memory_budget_gib, else 60% of the GPU's free memory, else a
    quarter of the free RAM (the rest holds the cached samples, the workers and the system)."""
    import torch

    if train_cfg.get("memory_budget_gib"):
        return int(train_cfg["memory_budget_gib"] * 2**30), "train.memory_budget_gib"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.6 * free), f"60% of the free memory of {torch.cuda.get_device_name(device)}"
    import psutil

    return int(psutil.virtual_memory().available / 4), "a quarter of the free RAM"


def formula_bytes(model_args: dict, spatial: list[int]) -> int:
    """Activation memory of one sample kept for the backward pass, by formula (CPU): a U-Net keeps about
    eight float32 maps of each level's width at each level's resolution (convolution, normalisation
    and activation outputs of the residual units, encoder and decoder, and the skip copy); an
    image-level network about twelve maps of its stem width at half the input resolution."""
    voxels = math.prod(spatial)
    if "channels" in model_args and model_args["name"] == "unet":
        total, scale = 0.0, 1.0
        for width, stride in zip(model_args["channels"], [1, *model_args["strides"]]):
            scale *= stride ** len(spatial)
            total += width * voxels / scale
        return int(8 * 4 * total)
    width = {"densenet": model_args.get("init_features", 32), "resnet": 64 * model_args.get("width_factor", 1.0)}
    stem = next((w for k, w in width.items() if model_args["name"].startswith(k)), 64)
    return int(12 * 4 * stem * voxels / 2 ** len(spatial))


@dataclass
class Probe:
    """One measured configuration: seconds per optimiser step and bytes per sample."""

    step_s: float
    bytes_per_sample: int
    how: str


def probe(model_args: dict, spatial: list[int], batch: int, device, amp: bool, steps: int = 3) -> Probe:
    """Time a training step (forward, backward, AdamW update) at `batch` x `spatial` on `device`, after one
    warm-up step; on a GPU also the peak memory it allocated, per sample."""
    import torch

    from sciconv import models

    torch.manual_seed(0)
    net = models.build(model_args).to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    inputs = torch.randn(batch, model_args["in_channels"], *spatial, device=device)
    use_amp = amp and device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = net(inputs).float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    if device.type == "cuda":
        per_sample = (torch.cuda.max_memory_allocated(device) - base) // batch
        how = f"measured on {torch.cuda.get_device_name(device)}"
    else:
        per_sample, how = formula_bytes(model_args, spatial), "estimated by formula (CPU)"
    del net, optimizer, inputs
    return Probe(float(np.median(times[1:])), int(per_sample), how)


@dataclass
class Context:
    """What a task's plan reads: the dataset, its fingerprint, the preprocessed shapes and the device."""

    ds: object
    fingerprint: dict
    shapes: np.ndarray          # preprocessed spatial shapes of the training samples
    in_channels: int
    n_train: int
    n_val: int
    device: object
    plan: Plan

    def value(self, key: str):
        """The setting as it stands: the YAML's, else what this plan chose already, else the default."""
        if written(self.ds, key) or key not in self.plan.settings:
            value = self.ds.cfg
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            return value
        return self.plan.settings[key].value

    def plans(self, key: str) -> bool:
        """Whether the plan decides `key` (the YAML leaves it out)."""
        return not written(self.ds, key)

    def budget_s(self) -> float:
        return float(self.ds.cfg["train"]["time_budget_min"]) * 60.0


def plan_error(ds, what: str) -> PlanError:
    return PlanError(f"{ds.path}: {what}")


def batch_limits(ctx: Context, spatial: list[int], per_sample: int, multiple: int = 1) -> tuple[int, str]:
    """The largest batch that fits the memory budget, at most BATCH_LIMITS' ceiling and one batch per 5%
    of the training voxels (nnU-Net's cap: a batch should not be a large part of a small dataset)."""
    budget, source = memory_budget_bytes(ctx.ds.cfg["train"], ctx.device)
    fits = budget // max(per_sample, 1)
    low, high = BATCH_LIMITS[len(spatial)]
    if fits < 1:
        raise plan_error(ctx.ds, f"one sample of {list(spatial)} needs about {per_sample / 2**30:.2f} GiB for "
                                f"training, over the memory budget of {budget / 2**30:.2f} GiB ({source}); "
                                "set a smaller train.patch_size (or preprocess to a coarser spacing), or raise "
                                "train.memory_budget_gib on a device that has it")
    dataset_voxels = float(np.prod(ctx.shapes, 1).sum())
    share = max(low, int(DATASET_SHARE_PER_BATCH * dataset_voxels / math.prod(spatial)))
    batch = int(max(1, min(fits, high, share)))
    limit = min((fits, "memory"), (high, f"{len(spatial)}D ceiling"), (share, "5% of the training voxels"))
    rounded = max(multiple, batch // multiple * multiple)  # whole images' worth of patches per batch
    if rounded > fits:
        raise plan_error(ctx.ds, f"train.patches_per_image {multiple} patches of {list(spatial)} need about "
                                f"{multiple * per_sample / 2**30:.2f} GiB, over the memory budget of "
                                f"{budget / 2**30:.2f} GiB ({source}); lower train.patches_per_image or the patch")
    return rounded, (f"largest batch within the {limit[1]} ({per_sample / 2**20:.0f} MiB per sample, budget "
                     f"{budget / 2**30:.1f} GiB: {source})" + (f", a multiple of patches_per_image {multiple}"
                                                               if multiple > 1 else ""))


def schedule(ctx: Context, model_args: dict, spatial: list[int], samples_per_epoch: int,
             eval_inputs_per_val_sample: float, multiple: int = 1) -> tuple[int, int, Probe]:
    """Batch size and epochs for training at `spatial` within train.time_budget_min: batch from memory,
    epochs from the measured step time (what the YAML writes is kept, and timed as written)."""
    amp = ctx.ds.cfg["train"]["amp"]
    first = probe(model_args, spatial, 2, ctx.device, amp, steps=1)
    if ctx.plans("train.batch_size"):
        batch, reason = batch_limits(ctx, spatial, first.bytes_per_sample, multiple)
        ctx.plan.set("train.batch_size", batch, reason)
    batch = int(ctx.value("train.batch_size"))
    # timed afresh even at batch 2: one step (all the memory probe takes) is too noisy on a shared machine
    measured = probe(model_args, spatial, batch, ctx.device, amp)
    steps = math.ceil(samples_per_epoch / batch)
    # validation: a forward pass (about a third of a step) per input-sized window, every val_every epochs
    val_s = ctx.n_val * eval_inputs_per_val_sample * measured.step_s / batch / 3 / ctx.ds.cfg["train"]["val_every"]
    epoch_s = steps * measured.step_s + val_s
    ctx.plan.measured.update({"input": list(spatial), "batch_size": batch, "step_s": round(measured.step_s, 4),
                              "epoch_s": round(epoch_s, 2), "steps_per_epoch": steps,
                              "bytes_per_sample": measured.bytes_per_sample, "memory": measured.how,
                              "device": str(ctx.device)})
    epochs = int(ctx.budget_s() * BUDGET_FOR_TRAINING // epoch_s)
    return batch, epochs, measured


def set_epochs(ctx: Context, epochs: int) -> None:
    """train.epochs from the budget; a budget shorter than one epoch stops here, before training."""
    budget_min = ctx.ds.cfg["train"]["time_budget_min"]
    epoch_s = ctx.plan.measured["epoch_s"]
    if epochs < 1:
        raise plan_error(ctx.ds, f"key train.time_budget_min: {budget_min:g} min is less than one epoch, which "
                                f"takes about {epoch_s:.0f} s on {ctx.device} ({ctx.plan.measured['steps_per_epoch']}"
                                f" steps of {ctx.plan.measured['step_s']:.2f} s); raise it to at least "
                                f"{math.ceil(epoch_s / 60 / BUDGET_FOR_TRAINING * 2) / 2:g}, or set train.epochs")
    ctx.plan.set("train.epochs", epochs, f"{budget_min:g} min budget / {epoch_s:.1f} s per measured epoch "
                                         f"({ctx.plan.measured['steps_per_epoch']} steps of "
                                         f"{ctx.plan.measured['step_s']:.3f} s on {ctx.device})")
