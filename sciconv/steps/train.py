"""train: the one training loop.

Reads preprocessed.h5 and split.json; writes results/<dataset>/model/model.pt
(best weights, model arguments, resolved config) and a resumable
results/<dataset>/model/last.pt after every epoch; logs to one MLflow run,
which ends FINISHED, FAILED (the error as a tag) or KILLED, never left RUNNING.

Resuming: each epoch draws its randomness (shuffling, patch sampling,
augmentation) from a seed derived from (seed, epoch), so an interrupted run
resumed from last.pt sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sciconv import __version__, data, distributed, models, plots
from sciconv.augment import BatchAugment
from sciconv.batches import choose_cache, store_cache_bytes
from sciconv.config import ConfigError, DatasetConfig, flatten
from sciconv.errors import TrainingError
from sciconv.inference import autocast, load_checkpoint
from sciconv.paths import DatasetPaths
from sciconv.runtime import atomic_write_json, derive_seed, git_commit, log, pick_device, seed_everything
from sciconv.settings import step_settings
from sciconv.store import ArrayCache, StoreReader
from sciconv.tracking import ModelURIError, Tracker, checkpoint_path, register_model, tracking_uri


def config_fingerprint(ds: DatasetConfig) -> str:
    """What must match for a checkpoint to be resumed: the settings training reads (sciconv.settings)."""
    key = json.dumps(step_settings(ds, "train"), sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def build_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["learning_rate"], momentum=0.99, nesterov=True,
                               weight_decay=cfg["weight_decay"])
    optimizer = torch.optim.AdamW if cfg["optimizer"] == "adamw" else torch.optim.Adam
    return optimizer(params, lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])


def initialise_from(net: torch.nn.Module, reference: str, uri: str) -> list[str]:
    """Copy the weights of a model trained before into net; layers whose shapes differ keep their fresh weights.

    Returns the names of the parameters that were not copied (the output layer when the classes differ).
    """
    source = load_checkpoint(checkpoint_path(reference, uri))["model_state"]
    own = net.state_dict()
    copied = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not copied:
        raise ConfigError(f"init_from {reference}: no layer of that model fits this one "
                          "(a different network or input channels?)")
    net.load_state_dict(copied, strict=False)
    return sorted(set(own) - set(copied))


def set_encoder_trainable(net: torch.nn.Module, trainable: bool) -> None:
    """Freeze or thaw everything except the output head."""
    head = models.output_head(net)
    for name, parameter in net.named_parameters():
        parameter.requires_grad = trainable or name.startswith(head + ".")


def progress_bar(loader, epoch: int, epochs: int):
    """A tqdm bar over the epoch's batches on a terminal (batch, loss, samples/s, ETA); the bare loader
    in a non-interactive log, which gets one line per epoch instead."""
    if not sys.stderr.isatty():
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False, dynamic_ncols=True)


def memory_format_for(dev: torch.device, spatial_dims: int, train_cfg: dict):
    """channels-last memory, by default for 2D convolutions on a GPU (cuDNN's fastest bf16 kernels want
    NHWC); None keeps PyTorch's default layout."""
    channels_last = train_cfg["channels_last"]
    if channels_last is None:
        channels_last = dev.type == "cuda" and spatial_dims == 2
    if not channels_last:
        return None
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


@dataclass
class Training:
    """One training run's state, carried between its phases (set up, resume, epochs, finish)."""

    ds: DatasetConfig
    world: distributed.World
    dev: torch.device
    paths: DatasetPaths
    split: dict
    train_records: list
    val_records: list
    task: object
    model_args: dict  # what rebuilds the network (saved in model.pt)
    seed: int
    net: torch.nn.Module
    batches: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    amp: bool
    fingerprint: str
    start_epoch: int = 0
    best: float = -math.inf
    best_state: dict | None = None
    run_id: str | None = None
    history: list = field(default_factory=list)
    seen_example: np.ndarray | None = None
    model: torch.nn.Module | None = None  # net, wrapped for data-parallel training
    forward: object = None  # model, compiled when train.compile
    memory_format: object = None
    fold: int | None = None  # the cross-validation fold this training is, where all folds train

    @property
    def epochs(self) -> int:
        return self.ds.cfg["train"]["epochs"]


def set_up_device(ds: DatasetConfig, world: distributed.World, device: str | None, threads: int | None):
    dev = pick_device(device or ds.global_cfg["device"])
    distributed.start(world, dev)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, (ds.cfg["train"]["num_threads"] or threads or torch.get_num_threads()) // world.size))
    else:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
    return dev


def load_data(ds: DatasetConfig, paths: DatasetPaths, dev: torch.device):
    """The split (as the fold sees it), the training and validation records, and where the training
    samples live (train.cache, decided here once): the training set stays in the store when it does not
    fit in memory."""
    from sciconv.steps.split import fold_split

    split = data.load_split(paths.split)
    if paths.fold is not None:
        split = fold_split(split, paths.fold)
    placement = choose_cache(ds.cfg["train"]["cache"], data.stored_bytes(paths.preprocessed, split["train"]), dev)
    lazy = ArrayCache(store_cache_bytes()) if placement == "store" else None
    train_records = data.load_records(paths.preprocessed, split["train"], lazy_cache=lazy)
    return split, train_records, data.load_records(paths.preprocessed, split["val"]), placement


def set_up(ds: DatasetConfig, world: distributed.World, dev: torch.device, fold: int | None = None) -> Training:
    """Data, task, network, batches and optimiser, every check that needs the data done before any epoch."""
    paths, cfg, train_cfg = DatasetPaths(ds.results_dir, fold), ds.cfg, ds.cfg["train"]
    split, train_records, val_records, placement = load_data(ds, paths, dev)
    try:
        # the task builds its batches in the placement chosen above, not in a second guess of its own
        task = ds.task({**cfg, "train": {**train_cfg, "cache": placement}}, ds.class_names, train_records, val_records)
    except ValueError as err:
        raise ConfigError(f"{ds.path}: {err}") from err
    spatial_dims = train_records[0]["image"].ndim - 1
    model_args = models.model_args(cfg["model"], spatial_dims, train_records[0]["image"].shape[0], len(ds.class_names),
                                   input_size=train_records[0]["image"].shape[1:])
    models.check_input_size(model_args, task.input_size)  # fail before any work, with the fix in the message
    # each fold starts from its own weights: an ensemble of identical starts would agree more than it should
    seed = derive_seed(ds.seed, ds.name, "train", *([f"fold{fold}"] if fold is not None else []))
    seed_everything(seed)
    net = models.build(model_args).to(dev)
    if cfg["init_from"]:
        try:
            fresh = initialise_from(net, cfg["init_from"], tracking_uri(ds.global_cfg))
        except ModelURIError as err:
            raise ConfigError(f"{ds.path}: key init_from: {err}") from err
        log.info("initialised from %s; %d tensors start fresh: %s", cfg["init_from"], len(fresh), ", ".join(fresh[:6]))
    try:
        batches = task.train_batches(BatchAugment(ds.domain.augment_specs(cfg["augment"])), dev, world.rank, world.size)
    except ValueError as err:
        raise ConfigError(f"{ds.path}: {err}") from err
    optimizer = build_optimizer(net.parameters(), train_cfg)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train_cfg["epochs"])
                 if train_cfg["scheduler"] == "cosine" else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0))
    amp = train_cfg["amp"] and dev.type == "cuda"
    # fp16 needs loss scaling against underflow; bf16 and fp32 do not, and then the scaler is a no-op.
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())
    return Training(ds, world, dev, paths, split, train_records, val_records, task, model_args, seed, net, batches,
                    optimizer, scheduler, scaler, amp, config_fingerprint(ds),
                    memory_format=memory_format_for(dev, spatial_dims, train_cfg), fold=fold)


def resume(t: Training) -> None:
    """Continue from last.pt when it was written for these settings; otherwise start at epoch 0."""
    if not t.paths.checkpoint.is_file():
        return
    state = load_checkpoint(t.paths.checkpoint)
    if state.get("fingerprint") != t.fingerprint:
        log.info("ignoring %s: it was written for different settings", t.paths.checkpoint)
        return
    t.net.load_state_dict(state["model_state"])
    t.optimizer.load_state_dict(state["optimizer_state"])
    t.scheduler.load_state_dict(state["scheduler_state"])
    t.scaler.load_state_dict(state["scaler_state"])
    t.start_epoch, t.best, t.best_state = state["epoch"] + 1, state["best"], state["best_state"]
    t.run_id, t.history = state["mlflow_run_id"], state["history"]
    log.info("resuming from %s at epoch %d of %d", t.paths.checkpoint, t.start_epoch + 1, t.epochs)


def wrap(t: Training) -> None:
    """Memory format, data-parallel wrapper and compilation, after the weights are final for epoch 0."""
    if t.memory_format is not None:
        t.net = t.net.to(memory_format=t.memory_format)
    t.model = distributed.wrap(t.net, t.world, t.dev)
    t.net = t.model.module if t.world.size > 1 else t.model  # the plain network: validation, checkpoints, export
    # torch.compile is off unless asked: its compile time pays off only on long runs
    t.forward = torch.compile(t.model) if t.ds.cfg["train"]["compile"] else t.model


def run(ds: DatasetConfig, device: str | None = None, threads: int | None = None, fold: int | None = None) -> None:
    from sciconv.planning import with_plan

    if fold is not None and fold not in ds.cv_folds:
        raise ConfigError(f"{ds.path}: --fold {fold}: the dataset trains "
                          + (f"folds 0 to {len(ds.cv_folds) - 1}" if ds.cv_folds else "one model (no split.k_folds, "
                             "or split.fold fixes one)"))
    ds = with_plan(ds)  # plan.json's values under the keys the dataset YAML leaves out
    world = distributed.current()
    t = set_up(ds, world, set_up_device(ds, world, device, threads), fold)
    t.paths.model_dir.mkdir(parents=True, exist_ok=True)
    resume(t)
    wrap(t)
    tracker = Tracker(tracking_uri(ds.global_cfg), ds.global_cfg["results_dir"], ds.name) if world.is_main else None
    if tracker is not None:
        open_run(t, tracker)
    # the run ends FINISHED after publish_model(), FAILED on an error, KILLED on SIGINT/SIGTERM
    with tracker.closing() if tracker else contextlib.nullcontext():
        # system/* metrics (CPU, memory, GPU) sampled beside the epochs, in the same run
        with tracker.system_metrics(resume=t.start_epoch > 0) if tracker else contextlib.nullcontext():
            for epoch in range(t.start_epoch, t.epochs):
                train_epoch(t, epoch, tracker)
        distributed.stop(world)
        if world.is_main:
            publish_model(t, tracker)


def train_epoch(t: Training, epoch: int, tracker: Tracker | None) -> None:
    started = time.perf_counter()
    epoch_seed = derive_seed(t.seed, str(epoch))
    seed_everything(epoch_seed)
    t.batches.set_epoch(epoch_seed)
    frozen_epochs = t.ds.cfg["train"]["freeze_encoder_epochs"] if t.ds.cfg["init_from"] else 0
    if frozen_epochs:
        # only the new head learns at first, so its random gradients do not wreck the transferred features
        set_encoder_trainable(t.net, trainable=epoch >= frozen_epochs)
    t.model.train()
    losses, n_seen, waited = [], 0, 0.0
    bar = progress_bar(t.batches, epoch, t.epochs) if t.world.is_main else t.batches
    step_end = time.perf_counter()
    for step, (inputs, targets) in enumerate(bar, start=1):
        waited += time.perf_counter() - step_end  # the host assembling this batch: the model was idle
        loss = train_step(t, inputs, targets)
        losses.append(loss.detach())
        n_seen += inputs.shape[0] * t.world.size
        if bar is not t.batches and step % 10 == 1:  # a terminal only; .item() syncs, so not every step
            bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{n_seen / (time.perf_counter() - started):.1f}")
        step_end = time.perf_counter()
    t.scheduler.step()
    trained = time.perf_counter() - started
    # One host sync per epoch, not per step: .item() inside the loop would stall the GPU each batch.
    train_loss = distributed.mean_across(torch.stack(losses).mean(), t.world).item()
    if not math.isfinite(train_loss):
        raise TrainingError(f"the training loss became {train_loss} in epoch {epoch + 1}: an input holds NaN or "
                            f"infinite values, or train.learning_rate ({t.ds.cfg['train']['learning_rate']}) is too "
                            "high; check preprocessed.h5 or lower the rate")
    if t.world.is_main:
        end_epoch(t, epoch, tracker, {"train_loss": train_loss, "lr": t.optimizer.param_groups[0]["lr"]},
                  started, trained, n_seen, waited)


def train_step(t: Training, inputs: torch.Tensor, targets) -> torch.Tensor:
    if t.memory_format is not None:
        inputs = inputs.contiguous(memory_format=t.memory_format)
    if t.seen_example is None:  # the first augmented batch, for the "what it saw" grid
        t.seen_example = inputs[:8].detach().float().cpu().numpy()
        if t.world.size > 1:
            log.info("process %d of %d trains on %d samples per step", t.world.rank + 1, t.world.size, inputs.shape[0])
    with autocast(t.dev, t.amp):
        loss = t.task.loss(t.forward(inputs), targets)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update()
    return loss


def end_epoch(t: Training, epoch: int, tracker: Tracker, metrics: dict, started: float, trained: float,
              n_seen: int, waited: float) -> None:
    """Validate when due, keep the best weights, log the epoch and write the resumable checkpoint."""
    if (epoch + 1) % t.ds.cfg["train"]["val_every"] == 0 or epoch + 1 == t.epochs:
        val_metrics, score = t.task.validate(t.net, t.dev, t.amp)
        metrics |= val_metrics
        if not math.isnan(score) and score > t.best:
            t.best = score
            t.best_state = {k: v.detach().cpu().clone() for k, v in t.net.state_dict().items()}
    metrics |= {"epoch_time_s": time.perf_counter() - started, "samples_per_s": n_seen / trained,
                "data_wait_fraction": waited / trained}
    t.history.append({"epoch": epoch + 1, **metrics})
    tracker.log_metrics(metrics, step=epoch + 1)
    remaining = (t.epochs - epoch - 1) * float(np.mean([h["epoch_time_s"] for h in t.history[-5:]]))
    log.info("epoch %d/%d " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()) + " eta=%s",
             epoch + 1, t.epochs, time.strftime("%H:%M:%S", time.gmtime(remaining)))
    partial = t.paths.checkpoint.with_suffix(".partial")
    torch.save({"epoch": epoch, "fingerprint": t.fingerprint, "model_state": t.net.state_dict(),
                "optimizer_state": t.optimizer.state_dict(), "scheduler_state": t.scheduler.state_dict(),
                "scaler_state": t.scaler.state_dict(), "best": t.best, "best_state": t.best_state,
                "mlflow_run_id": t.run_id, "history": t.history}, partial)
    partial.replace(t.paths.checkpoint)


def open_run(t: Training, tracker: Tracker) -> None:
    """Open (or reopen, when resuming) the dataset's training run; params, config, split and data statistics once."""
    ds, cfg = t.ds, t.ds.cfg
    tags = {"dataset": ds.name, "domain": cfg["domain"], "task": cfg["task"], "model": cfg["model"]["name"],
            "sciconv_version": __version__, "git_commit": git_commit(), "device": str(t.dev),
            "processes": str(t.world.size)} | ({"fold": str(t.fold)} if t.fold is not None else {})
    name = f"{ds.name}-train" if t.fold is None else f"{ds.name}-fold{t.fold}"
    t.run_id = tracker.start(t.run_id, tags=tags, run_name=name)
    if t.start_epoch > 0:
        return
    with StoreReader(t.paths.preprocessed) as store:
        n_rejected = store.attrs.get("n_rejected", 0)
    tracker.log_params(flatten(cfg) | {"seed": ds.seed, "device": str(t.dev), "n_train": len(t.train_records),
                                       "n_rejected_inputs": n_rejected, "n_val": len(t.val_records),
                                       "n_parameters": sum(p.numel() for p in t.net.parameters()),
                                       "overrides": "; ".join(ds.overrides) or "none"})
    tracker.log_dict(cfg, "config/resolved_config.json")
    tracker.log_artifact(t.paths.split, "split")
    for planned in (t.paths.fingerprint, t.paths.plan):
        tracker.log_artifact(planned, "plan")
    statistics = data.dataset_statistics({"train": t.train_records, "val": t.val_records}, ds.class_names, ds.task)
    tracker.log_dict(statistics, "data/statistics.json")
    tracker.log_dataset(ds.name, t.paths.preprocessed, t.split, statistics)


def final_network(t: Training) -> torch.nn.Module:
    """The best weights in a plain network (no SyncBatchNorm, no DDP wrapper), in the default memory layout."""
    net = t.net
    if t.world.size > 1:
        net = models.build(t.model_args)
        net.load_state_dict(t.net.state_dict())
        net = net.to(t.dev)
    if t.best_state is not None:
        net.load_state_dict(t.best_state)
    return net.to(memory_format=torch.contiguous_format)


def publish_model(t: Training, tracker: Tracker) -> None:
    """The best weights with what inference needs, written to model.pt and logged and registered in MLflow."""
    ds, paths, net = t.ds, t.paths, final_network(t)
    extras = t.task.finalize(net, t.dev, t.amp)
    final = {"model_args": t.model_args, "model_state": {k: v.cpu() for k, v in net.state_dict().items()},
             "config": ds.cfg, "class_names": ds.class_names, "mlflow_run_id": t.run_id, "fold": t.fold,
             "selection_metric": t.task.selection_metric, "best_score": t.best, "history": t.history, **extras}
    tmp = paths.model.with_suffix(".partial")
    torch.save(final, tmp)
    tmp.replace(paths.model)
    atomic_write_json(paths.model_dir / "run.json", {"mlflow_run_id": t.run_id, "experiment_id": tracker.experiment_id,
                                                      "tracking_uri": tracker.uri})
    dense = t.task.dense
    # dense networks are logged on training patches (any size works), image-level ones on whole images
    size = t.task.input_size if dense else t.train_records[0]["image"].shape[1:]
    def exactly(image):  # a corner crop of `size`, zero-padded where the image is smaller (volumes vary)
        crop = np.asarray(image[(slice(None),) + tuple(slice(0, s) for s in size)])
        return np.pad(crop, [(0, 0)] + [(0, s - c) for s, c in zip(size, crop.shape[1:])])

    example = np.stack([exactly(t.train_records[i % len(t.train_records)]["image"]) for i in range(2)]).astype(
        np.float32)
    tracker.log_metrics({f"final_{k}": v for k, v in extras.items() if isinstance(v, float)}, step=t.epochs)
    tracker.log_model(net.cpu().eval(), example, len(ds.class_names), spatial_free=dense)
    tracker.log_artifact(paths.model, "checkpoint")
    seen = t.seen_example if t.seen_example is not None else example
    tracker.log_artifact(plots.augmented_samples(paths.model_dir, seen, ds.name), "plots")
    version = register_model(t.run_id, f"sciconv-{ds.name}", tracker.uri)
    log.info("best %s %.4f; model written to %s (MLflow run %s, registered as sciconv-%s version %s)",
             t.task.selection_metric, t.best, paths.model, t.run_id, ds.name, version)
