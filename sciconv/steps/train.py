"""train: the one training loop.

Reads preprocessed.h5 and split.json; writes results/<dataset>/model/model.pt
(best weights, model arguments, resolved config) and a resumable
results/<dataset>/model/last.pt after every epoch; logs to one MLflow run.

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

import numpy as np
import torch

from sciconv import __version__, data, distributed, models, plots
from sciconv.augment import BatchAugment
from sciconv.batches import choose_cache, store_cache_bytes
from sciconv.config import ConfigError, DatasetConfig, flatten
from sciconv.inference import autocast, load_checkpoint
from sciconv.paths import DatasetPaths
from sciconv.runtime import atomic_write_json, derive_seed, git_commit, log, pick_device, seed_everything
from sciconv.store import ArrayCache, StoreReader
from sciconv.tasks import task_for
from sciconv.tracking import ModelURIError, Tracker, checkpoint_path, register_model, tracking_uri


def config_fingerprint(ds: DatasetConfig) -> str:
    """What must match for a checkpoint to be resumed: the dataset config and the seed."""
    key = json.dumps({"cfg": ds.cfg, "seed": ds.seed}, sort_keys=True)
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


def run(ds: DatasetConfig, device: str | None = None, threads: int | None = None) -> None:
    world = distributed.current()
    paths = DatasetPaths(ds.results_dir)
    cfg, train_cfg = ds.cfg, ds.cfg["train"]
    if cfg["task"] == "segmentation" and not models.is_segmenter(cfg["model"]["name"]):
        raise ConfigError(f"{ds.path}: key model.name: {cfg['model']['name']!r} is an image-level network; "
                          f"segmentation needs one of {', '.join(models.SEGMENTERS)}")
    if cfg["task"] != "segmentation" and models.is_segmenter(cfg["model"]["name"]):
        raise ConfigError(f"{ds.path}: key model.name: {cfg['model']['name']!r} is a segmenter; "
                          f"{cfg['task']} needs an image-level network such as densenet121 or resnet18")
    dev = pick_device(device or ds.global_cfg["device"])
    distributed.start(world, dev)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, (train_cfg["num_threads"] or threads or torch.get_num_threads()) // world.size))
    else:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
    amp = train_cfg["amp"] and dev.type == "cuda"

    split = data.load_split(paths.split)
    # a training set larger than memory stays in preprocessed.h5, read per batch (train.cache store)
    placement = choose_cache(train_cfg["cache"], data.stored_bytes(paths.preprocessed, split["train"]), dev)
    lazy = ArrayCache(store_cache_bytes()) if placement == "store" else None
    train_records = data.load_records(paths.preprocessed, split["train"], lazy_cache=lazy)
    val_records = data.load_records(paths.preprocessed, split["val"])
    class_names = ds.class_names
    try:
        task = task_for(cfg["task"])(cfg, class_names, train_records, val_records)
    except ValueError as err:
        raise ConfigError(f"{ds.path}: {err}") from err
    spatial_dims = train_records[0]["image"].ndim - 1
    args = models.model_args(cfg["model"], spatial_dims, train_records[0]["image"].shape[0], len(class_names))
    models.check_input_size(args, task.input_size)  # fail before any work, with the fix in the message

    seed = derive_seed(ds.seed, ds.name, "train")
    seed_everything(seed)
    net = models.build(args).to(dev)
    if cfg["init_from"]:
        try:
            fresh = initialise_from(net, cfg["init_from"], tracking_uri(ds.global_cfg))
        except ModelURIError as err:
            raise ConfigError(f"{ds.path}: key init_from: {err}") from err
        log.info("initialised from %s; %d tensors start fresh: %s", cfg["init_from"], len(fresh), ", ".join(fresh[:6]))
    try:
        augment = BatchAugment(ds.domain.augment_specs(cfg["augment"]))
        batches = task.train_batches(augment, dev, world.rank, world.size)
    except ValueError as err:
        raise ConfigError(f"{ds.path}: {err}") from err
    optimizer = build_optimizer(net.parameters(), train_cfg)
    epochs = train_cfg["epochs"]
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
                 if train_cfg["scheduler"] == "cosine" else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0))
    # fp16 needs loss scaling against underflow; bf16 and fp32 do not, and then the scaler is a no-op.
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())

    paths.model_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = config_fingerprint(ds)
    start_epoch, best, best_state, run_id, history = 0, -math.inf, None, None, []
    if paths.checkpoint.is_file():
        state = load_checkpoint(paths.checkpoint)
        if state.get("fingerprint") == fingerprint:
            net.load_state_dict(state["model_state"])
            optimizer.load_state_dict(state["optimizer_state"])
            scheduler.load_state_dict(state["scheduler_state"])
            scaler.load_state_dict(state["scaler_state"])
            start_epoch, best, best_state = state["epoch"] + 1, state["best"], state["best_state"]
            run_id, history = state["mlflow_run_id"], state["history"]
            log.info("resuming from %s at epoch %d of %d", paths.checkpoint, start_epoch + 1, epochs)
        else:
            log.info("ignoring %s: it was written for a different config", paths.checkpoint)
    memory_format = memory_format_for(dev, spatial_dims, train_cfg)
    if memory_format is not None:
        net = net.to(memory_format=memory_format)
    model = distributed.wrap(net, world, dev)
    net = model.module if world.size > 1 else model  # the plain network: validation, checkpoints, export
    # torch.compile is off unless asked: its compile time pays off only on long runs
    forward = torch.compile(model) if train_cfg["compile"] else model

    tracker = Tracker(tracking_uri(ds.global_cfg), ds.global_cfg["results_dir"], ds.name) if world.is_main else None
    if tracker is not None:
        run_id = start_tracking(tracker, ds, dev, net, run_id, start_epoch, paths, split, train_records, val_records,
                                world.size)

    seen_example = None
    frozen_epochs = train_cfg["freeze_encoder_epochs"] if cfg["init_from"] else 0
    if frozen_epochs and models.is_segmenter(args["name"]):
        raise ConfigError(f"{ds.path}: key train.freeze_encoder_epochs: freezing applies to image-level networks")
    # system/* metrics (CPU, memory, GPU) sampled beside the epochs, in the same run
    with tracker.system_metrics(resume=start_epoch > 0) if tracker else contextlib.nullcontext():
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            epoch_seed = derive_seed(seed, str(epoch))
            seed_everything(epoch_seed)
            batches.set_epoch(epoch_seed)
            if frozen_epochs:
                # only the new head learns at first, so its random gradients do not wreck the transferred features
                set_encoder_trainable(net, trainable=epoch >= frozen_epochs)
            model.train()
            losses, n_seen, waited = [], 0, 0.0
            bar = progress_bar(batches, epoch, epochs) if world.is_main else batches
            step_end = time.perf_counter()
            for step, (inputs, targets) in enumerate(bar, start=1):
                waited += time.perf_counter() - step_end  # the host assembling this batch: the model was idle
                if memory_format is not None:
                    inputs = inputs.contiguous(memory_format=memory_format)
                if seen_example is None:  # the first augmented batch, for the "what it saw" grid
                    seen_example = inputs[:8].detach().float().cpu().numpy()
                    if world.size > 1:
                        log.info("process %d of %d trains on %d samples per step", world.rank + 1, world.size,
                                 inputs.shape[0])
                with autocast(dev, amp):
                    loss = task.loss(forward(inputs), targets)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(loss.detach())
                n_seen += inputs.shape[0] * world.size
                if bar is not batches and step % 10 == 1:  # a terminal only; .item() syncs, so not every step
                    bar.set_postfix(loss=f"{loss.item():.4f}",
                                    samples_s=f"{n_seen / (time.perf_counter() - started):.1f}")
                step_end = time.perf_counter()
            scheduler.step()
            trained = time.perf_counter() - started
            # One host sync per epoch, not per step: .item() inside the loop would stall the GPU each batch.
            train_loss = distributed.mean_across(torch.stack(losses).mean(), world).item()
            if not world.is_main:
                continue
            metrics = {"train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"]}
            if (epoch + 1) % train_cfg["val_every"] == 0 or epoch + 1 == epochs:
                val_metrics, score = task.validate(net, dev, amp)
                metrics |= val_metrics
                if not math.isnan(score) and score > best:
                    best = score
                    best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            elapsed = time.perf_counter() - started
            metrics |= {"epoch_time_s": elapsed, "samples_per_s": n_seen / trained,
                        "data_wait_fraction": waited / trained}
            history.append({"epoch": epoch + 1, **metrics})
            tracker.log_metrics(metrics, step=epoch + 1)
            remaining = (epochs - epoch - 1) * float(np.mean([h["epoch_time_s"] for h in history[-5:]]))
            log.info("epoch %d/%d " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()) + " eta=%s",
                     epoch + 1, epochs, time.strftime("%H:%M:%S", time.gmtime(remaining)))
            torch.save({"epoch": epoch, "fingerprint": fingerprint, "model_state": net.state_dict(),
                        "optimizer_state": optimizer.state_dict(), "scheduler_state": scheduler.state_dict(),
                        "scaler_state": scaler.state_dict(), "best": best, "best_state": best_state,
                        "mlflow_run_id": run_id, "history": history}, paths.checkpoint.with_suffix(".partial"))
            paths.checkpoint.with_suffix(".partial").replace(paths.checkpoint)

    distributed.stop(world)
    if not world.is_main:
        return
    if world.size > 1:  # export a plain network (no SyncBatchNorm, no DDP wrapper)
        plain = models.build(args)
        plain.load_state_dict(net.state_dict())
        net = plain.to(dev)
    if best_state is not None:
        net.load_state_dict(best_state)
    net = net.to(memory_format=torch.contiguous_format)
    finish(ds, task, net, args, dev, amp, best, run_id, history, tracker, paths, train_records, seen_example)


def start_tracking(tracker: Tracker, ds: DatasetConfig, dev, net, run_id, start_epoch: int, paths: DatasetPaths,
                   split: dict, train_records: list[dict], val_records: list[dict], processes: int) -> str:
    """Open (or reopen, when resuming) the dataset's training run; params, config, split and data statistics once."""
    cfg = ds.cfg
    tags = {"dataset": ds.name, "domain": cfg["domain"], "task": cfg["task"], "model": cfg["model"]["name"],
            "sciconv_version": __version__, "git_commit": git_commit(), "device": str(dev),
            "processes": str(processes)}
    run_id = tracker.start(run_id, tags=tags, run_name=f"{ds.name}-train")
    if start_epoch == 0:
        with StoreReader(paths.preprocessed) as store:
            n_rejected = store.attrs.get("n_rejected", 0)
        tracker.log_params(flatten(cfg) | {"seed": ds.seed, "device": str(dev), "n_train": len(train_records),
                                           "n_rejected_inputs": n_rejected,
                                           "n_val": len(val_records), "n_parameters": sum(p.numel() for p in net.parameters())})
        tracker.log_dict(cfg, "config/resolved_config.json")
        tracker.log_artifact(paths.split, "split")
        statistics = data.dataset_statistics({"train": train_records, "val": val_records}, ds.class_names, cfg["task"])
        tracker.log_dict(statistics, "data/statistics.json")
        tracker.log_dataset(ds.name, paths.preprocessed, split, statistics)
    return run_id


def finish(ds: DatasetConfig, task, net, args: dict, dev, amp: bool, best: float, run_id: str, history: list,
           tracker: Tracker, paths: DatasetPaths, train_records: list[dict], seen_example) -> None:
    """The best weights with what inference needs, written to model.pt and logged and registered in MLflow."""
    cfg, class_names, epochs = ds.cfg, ds.class_names, ds.cfg["train"]["epochs"]
    extras = task.finalize(net, dev, amp)
    final = {"model_args": args, "model_state": {k: v.cpu() for k, v in net.state_dict().items()},
             "config": cfg, "class_names": class_names, "mlflow_run_id": run_id,
             "selection_metric": task.selection_metric, "best_score": best, "history": history, **extras}
    tmp = paths.model.with_suffix(".partial")
    torch.save(final, tmp)
    tmp.replace(paths.model)
    atomic_write_json(paths.model_dir / "run.json", {"mlflow_run_id": run_id, "experiment_id": tracker.experiment_id,
                                                      "tracking_uri": tracker.uri})
    # segmenters are logged on training patches (any size works), image-level networks on whole images
    size = task.input_size if models.is_segmenter(args["name"]) else train_records[0]["image"].shape[1:]
    example = np.stack([train_records[i % len(train_records)]["image"][(slice(None),) + tuple(
        slice(0, s) for s in size)] for i in range(2)]).astype(np.float32)
    tracker.log_metrics({f"final_{k}": v for k, v in extras.items() if isinstance(v, float)}, step=epochs)
    tracker.log_model(net.cpu().eval(), example, len(class_names), spatial_free=models.is_segmenter(args["name"]))
    tracker.log_artifact(paths.model, "checkpoint")
    if seen_example is not None:
        tracker.log_artifact(plots.augmented_samples(paths.model_dir, seen_example, ds.name), "plots")
    version = register_model(run_id, f"sciconv-{ds.name}", tracker.uri)
    log.info("best %s %.4f; model written to %s (MLflow run %s, registered as sciconv-%s version %s)",
             task.selection_metric, best, paths.model, run_id, ds.name, version)
