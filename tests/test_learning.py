"""Tests that prove learning: each task's real batches, loss and network overfit a handful of samples
(a broken loss, label or augmentation path stops that), and patch sampling draws its classes in the
configured ratios."""

import numpy as np
import pytest
import torch
import yaml

from sciconv.augment import BatchAugment
from sciconv.batches import Crops
from sciconv.config import load_dataset, load_global
from sciconv.models import build, model_args


def generic_dataset(tmp_path, task: str, **extra):
    """A generic-domain dataset config through the real loader (defaults, validation)."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"datasets": ["d"], "device": "cpu"}))
    cfg = {"domain": "generic", "task": task, "source": {"kind": "files", "layout": "folders", "path": "."}} | extra
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(cfg))
    return load_dataset(str(tmp_path / "d.yaml"), load_global(tmp_path / "config.yaml"))


def records(n: int, seed: int = 0, size: int = 32):
    """Images with a bright square at a random place; the mask marks it; label 1 for the larger squares."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = rng.normal(0, 0.3, (1, size, size)).astype(np.float32)
        mask = np.zeros((1, size, size), np.int64)
        side = 6 if i % 2 else 12
        y, x = rng.integers(0, size - side, 2)
        image[0, y:y + side, x:x + side] += 2.0
        mask[0, y:y + side, x:x + side] = 1
        out.append({"id": f"s{i}", "image": image, "mask_channel": mask, "label": i % 2 == 0 and 1 or 0,
                    "attrs": {"target": [float(side)]}})
    return out


def overfit(ds, train, steps: int = 60, lr: float = 3e-3) -> tuple[float, float, object, torch.nn.Module]:
    """Train the task's own batches and loss on `train` for `steps` steps; first and last loss."""
    torch.manual_seed(0)
    task = ds.task(ds.cfg, ds.class_names, train, train)
    batches = task.train_batches(BatchAugment([]), torch.device("cpu"))
    net = build(model_args(ds.cfg["model"], 2, 1, len(ds.class_names)))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    losses, step, epoch = [], 0, 0
    while step < steps:
        batches.set_epoch(epoch)
        for inputs, targets in batches:
            loss = task.loss(net(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        epoch += 1
    return float(np.mean(losses[:3])), float(np.mean(losses[-3:])), task, net


def test_segmentation_overfits_a_handful_of_frames(tmp_path):
    ds = generic_dataset(tmp_path, "segmentation", classes=["background", "square"],
                         model={"name": "unet", "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0},
                         train={"patch_size": [32, 32], "batch_size": 4, "patches_per_image": 1, "loss": "dice_ce"})
    first, last, task, net = overfit(ds, records(4), steps=80, lr=1e-2)
    assert last < first / 5, (first, last)
    metrics, _ = task.validate(net, torch.device("cpu"), amp=False)
    assert metrics["val_dice_square"] > 0.9


def test_classification_reaches_every_training_label(tmp_path):
    ds = generic_dataset(tmp_path, "classification", classes=["small", "large"],
                         model={"name": "resnet10", "width_factor": 0.25},
                         train={"batch_size": 8, "imbalance": "none"})
    train = records(8)
    first, last, _, net = overfit(ds, train, steps=60)
    assert last < first / 5, (first, last)
    net.eval()
    with torch.no_grad():
        predicted = net(torch.from_numpy(np.stack([r["image"] for r in train]))).argmax(1).numpy()
    assert predicted.tolist() == [int(r["label"]) for r in train]


def test_regression_fits_the_training_targets(tmp_path):
    ds = generic_dataset(tmp_path, "regression", targets=["side"], model={"name": "resnet10", "width_factor": 0.25},
                         train={"batch_size": 8})
    first, last, _, _ = overfit(ds, records(8), steps=60)
    assert last < first / 10, (first, last)


@pytest.mark.parametrize("ratios", [[1, 4, 2], [1, 0, 3]])
def test_class_ratio_crops_centre_on_each_class_in_the_configured_ratio(ratios):
    # 1x1 crops: a crop's start is its centre, so the class under it is the group drawn
    labels = np.zeros((40, 40), np.int64)
    labels[5:10, 5:10], labels[20:30, 20:22] = 1, 2
    crops = Crops.from_groups([1, 1], [[labels == c for c in range(3)]], ratios)
    n = 6000
    starts = crops.draw(np.zeros(n, dtype=int), torch.Generator().manual_seed(1))
    observed = np.bincount([labels[s] for s in starts], minlength=3)
    expected = n * np.asarray(ratios, float) / sum(ratios)
    sigma = np.sqrt(expected * (1 - expected / n))
    assert np.all(np.abs(observed - expected) <= 4 * sigma + 1e-9), (observed, expected)


def test_pos_neg_crops_follow_the_configured_ratio():
    mask = np.zeros((30, 30), np.int64)
    mask[10:14, 3:9] = 1
    crops = Crops.from_groups([1, 1], [[mask == 0, mask > 0]], [1.0, 3.0])
    starts = crops.draw(np.zeros(4000, dtype=int), torch.Generator().manual_seed(2))
    foreground = np.mean([mask[s] > 0 for s in starts])
    # binomial: p = 0.75, sd of the fraction 0.0068 at n = 4000
    assert abs(foreground - 0.75) < 4 * 0.0068


def test_ingest_names_a_file_whose_channel_count_differs_from_the_others():
    from pathlib import Path

    from sciconv.steps.ingest import DatasetChecks
    from sciconv.tasks import task_for

    checks = DatasetChecks(2, task_for("classification"))
    first = np.zeros((1, 8, 8), np.float32)
    assert checks.check(Path("a.png"), "sha-a", first) is None
    checks.accept(Path("a.png"), "sha-a", first, None, 0)
    reason = checks.check(Path("b.png"), "sha-b", np.zeros((3, 8, 8), np.float32))
    assert reason.startswith("3 channels among files of 1 (e.g. a.png)")
