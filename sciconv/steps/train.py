"""train: the one training loop.

Reads preprocessed.h5 and split.json; writes results/<dataset>/model/model.pt
(best weights, model arguments, resolved config) and a resumable
results/<dataset>/model/last.pt after every epoch; logs to one MLflow run.

Resuming: each epoch draws its randomness (shuffling, patch sampling,
augmentation) from a seed derived from (seed, epoch), so an interrupted run
resumed from last.pt sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import numpy as np
import torch

from sciconv import __version__, data, models
from sciconv.config import ConfigError, DatasetConfig, flatten
from sciconv.inference import autocast, load_checkpoint, segment_logits
from sciconv.metrics import ConfusionCounts, segmentation_metrics
from sciconv.paths import DatasetPaths
from sciconv.store import StoreReader
from sciconv.runtime import atomic_write_json, derive_seed, git_commit, log, pick_device, seed_everything
from sciconv.tracking import Tracker, tracking_uri


def config_fingerprint(ds: DatasetConfig) -> str:
    """What must match for a checkpoint to be resumed: the dataset config and the seed."""
    key = json.dumps({"cfg": ds.cfg, "seed": ds.seed}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def build_loss(name: str):
    from monai.losses import DiceCELoss, DiceLoss

    # batch=True pools Dice over the whole batch: a rare class absent from one
    # patch then does not contribute a meaningless 0-or-1 term per patch.
    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True, batch=True)
    ce = torch.nn.CrossEntropyLoss()
    return lambda logits, target: ce(logits, target[:, 0].long())


def build_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["learning_rate"], momentum=0.99, nesterov=True,
                               weight_decay=cfg["weight_decay"])
    optimizer = torch.optim.AdamW if cfg["optimizer"] == "adamw" else torch.optim.Adam
    return optimizer(params, lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])


def validation_metrics(net, records, patch_size, num_classes, class_names, device, amp) -> dict[str, float]:
    net.eval()
    counts = ConfusionCounts(num_classes)
    for record in records:
        logits = segment_logits(net, torch.from_numpy(record["image"])[None], patch_size, device, amp)
        counts.update(logits.argmax(1)[0].cpu().numpy(), record["mask"][0])
    return segmentation_metrics(counts, class_names, prefix="val_")


def run(ds: DatasetConfig, device: str | None = None, threads: int | None = None) -> None:
    paths = DatasetPaths(ds.results_dir)
    cfg, train_cfg = ds.cfg, ds.cfg["train"]
    if cfg["task"] != "segmentation":
        raise ConfigError(f"{ds.path}: key task: training for {cfg['task']!r} is not built yet; "
                          "sciconv trains segmentation networks today")
    dev = pick_device(device or ds.global_cfg["device"])
    if dev.type == "cpu":
        torch.set_num_threads(train_cfg["num_threads"] or threads or torch.get_num_threads())
    else:
        torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick its fastest kernels once
    amp = train_cfg["amp"] and dev.type == "cuda"

    split = data.load_split(paths.split)
    train_records = data.load_records(paths.preprocessed, split["train"])
    val_records = data.load_records(paths.preprocessed, split["val"])
    class_names = ds.class_names
    num_classes = len(class_names)
    spatial_dims = train_records[0]["image"].ndim - 1
    args = models.model_args(cfg["model"], spatial_dims, train_records[0]["image"].shape[0], num_classes)
    models.check_input_size(args, train_cfg["patch_size"])  # fail before any work, with the fix in the message

    seed = derive_seed(ds.seed, ds.name, "train")
    seed_everything(seed)
    net = models.build(args).to(dev)
    augment = ds.domain.augment_transforms(cfg["augment"], keys=("image", "mask"))
    loader, transforms = data.segmentation_train_loader(train_records, num_classes, train_cfg, augment)
    optimizer = build_optimizer(net.parameters(), train_cfg)
    epochs = train_cfg["epochs"]
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
                 if train_cfg["scheduler"] == "cosine" else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0))
    # fp16 needs loss scaling against underflow; bf16 and fp32 do not, and then the scaler is a no-op.
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())
    loss_fn = build_loss(train_cfg["loss"])

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

    tracker = Tracker(tracking_uri(ds.global_cfg), ds.global_cfg["results_dir"], ds.name)
    tags = {"dataset": ds.name, "domain": cfg["domain"], "task": cfg["task"], "model": cfg["model"]["name"],
            "sciconv_version": __version__, "git_commit": git_commit(), "device": str(dev)}
    run_id = tracker.start(run_id, tags=tags, run_name=f"{ds.name}-train")
    if start_epoch == 0:
        with StoreReader(paths.preprocessed) as store:
            n_rejected = store.attrs.get("n_rejected", 0)
        tracker.log_params(flatten(cfg) | {"seed": ds.seed, "device": str(dev), "n_train": len(train_records),
                                           "n_rejected_inputs": n_rejected,
                                           "n_val": len(val_records), "n_parameters": sum(p.numel() for p in net.parameters())})
        tracker.log_dict(cfg, "config/resolved_config.json")
        tracker.log_artifact(paths.split, "split")

    patch_size = train_cfg["patch_size"]
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        epoch_seed = derive_seed(seed, str(epoch))
        seed_everything(epoch_seed)
        transforms.set_random_state(seed=epoch_seed % 2**32)
        net.train()
        losses, n_seen = [], 0
        for batch in loader:
            images, masks = batch["image"].to(dev, non_blocking=True), batch["mask"].to(dev, non_blocking=True)
            with autocast(dev, amp):
                loss = loss_fn(net(images), masks)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.detach())
            n_seen += images.shape[0]
        scheduler.step()
        # One host sync per epoch, not per step: .item() inside the loop would stall the GPU each batch.
        metrics = {"train_loss": torch.stack(losses).mean().item(), "lr": optimizer.param_groups[0]["lr"]}
        if (epoch + 1) % train_cfg["val_every"] == 0 or epoch + 1 == epochs:
            metrics |= validation_metrics(net, val_records, patch_size, num_classes, class_names, dev, amp)
            score = metrics["val_dice_mean"]
            if not math.isnan(score) and score > best:
                best = score
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        elapsed = time.perf_counter() - started
        metrics |= {"epoch_time_s": elapsed, "samples_per_s": n_seen / elapsed}
        history.append({"epoch": epoch + 1, **metrics})
        tracker.log_metrics(metrics, step=epoch + 1)
        log.info("epoch %d/%d " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()), epoch + 1, epochs)
        torch.save({"epoch": epoch, "fingerprint": fingerprint, "model_state": net.state_dict(),
                    "optimizer_state": optimizer.state_dict(), "scheduler_state": scheduler.state_dict(),
                    "scaler_state": scaler.state_dict(), "best": best, "best_state": best_state,
                    "mlflow_run_id": run_id, "history": history}, paths.checkpoint.with_suffix(".partial"))
        paths.checkpoint.with_suffix(".partial").replace(paths.checkpoint)

    if best_state is not None:
        net.load_state_dict(best_state)
    final = {"model_args": args, "model_state": {k: v.cpu() for k, v in net.state_dict().items()},
             "config": cfg, "class_names": class_names, "patch_size": list(patch_size),
             "mlflow_run_id": run_id, "best_val_dice_mean": best, "history": history}
    tmp = paths.model.with_suffix(".partial")
    torch.save(final, tmp)
    tmp.replace(paths.model)
    atomic_write_json(paths.model_dir / "run.json", {"mlflow_run_id": run_id, "experiment_id": tracker.experiment_id,
                                                      "tracking_uri": tracker.uri})
    example = np.stack([train_records[i % len(train_records)]["image"][(slice(None),) + tuple(
        slice(0, s) for s in patch_size)] for i in range(2)]).astype(np.float32)
    tracker.log_model(net.cpu().eval(), example, num_classes)
    tracker.log_artifact(paths.model, "checkpoint")
    log.info("best val_dice_mean %.4f; model written to %s (MLflow run %s)", best, paths.model, run_id)
