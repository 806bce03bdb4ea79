"""Plots logged with every run: each with axes, units and a title, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def roc_pr_curves(out_dir: Path, labels: np.ndarray, scores: np.ndarray, baseline_scores: np.ndarray | None,
                  threshold: float | None, title: str) -> list[Path]:
    """ROC and precision-recall of the model (and the classical baseline), the operating point marked."""
    from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve, average_precision_score

    written = []
    curves = [("model", scores)] + ([("baseline", baseline_scores)] if baseline_scores is not None else [])
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for name, s in curves:
        fpr, tpr, _ = roc_curve(labels, s)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(labels, s):.3f})")
    if threshold is not None:
        predicted = scores >= threshold
        ax.plot(np.mean(predicted[labels == 0]), np.mean(predicted[labels == 1]), "ko",
                label=f"threshold {threshold:.3g}")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
           title=f"ROC: {title}")
    ax.legend(fontsize=8, loc="lower right")
    written.append(_save(fig, out_dir / "roc.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for name, s in curves:
        precision, recall, _ = precision_recall_curve(labels, s)
        ax.step(recall, precision, where="post", label=f"{name} (AP {average_precision_score(labels, s):.3f})")
    ax.axhline(np.mean(labels), ls=":", color="grey", label=f"prevalence {np.mean(labels):.3f}")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (positive predictive value)", ylim=(0, 1.02),
           title=f"precision-recall: {title}")
    ax.legend(fontsize=8)
    written.append(_save(fig, out_dir / "precision_recall.png"))
    return written


def confusion(out_dir: Path, matrix: np.ndarray, class_names: list[str], title: str) -> Path:
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2.5, 1.1 * len(class_names) + 2))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=f"confusion (test images): {title}")
    return _save(fig, out_dir / "confusion_matrix.png")


def calibration(out_dir: Path, labels: np.ndarray, scores: np.ndarray, title: str, bins: int = 10) -> Path:
    """Reliability diagram: observed positive fraction per bin of predicted probability."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(scores, edges) - 1, 0, bins - 1)
    centres, observed, counts = [], [], []
    for b in range(bins):
        inside = which == b
        if inside.any():
            centres.append(scores[inside].mean())
            observed.append(labels[inside].mean())
            counts.append(int(inside.sum()))
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.plot(centres, observed, "o-", label="model")
    for x, y, n in zip(centres, observed, counts):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="predicted probability of the positive class", ylabel="observed fraction positive",
           xlim=(0, 1), ylim=(-0.02, 1.02), title=f"calibration: {title}")
    ax.legend(fontsize=8)
    return _save(fig, out_dir / "calibration.png")


def training_curves(out_dir: Path, history: list[dict], title: str) -> Path:
    """Training loss and every validation metric against the epoch."""
    epochs = [h["epoch"] for h in history]
    val_keys = sorted({k for h in history for k in h if k.startswith("val_")})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train loss")
    if "val_loss" in val_keys:
        points = [(h["epoch"], h["val_loss"]) for h in history if "val_loss" in h]
        axes[0].plot(*zip(*points), label="validation loss")
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
    axes[0].legend(fontsize=8)
    for key in val_keys:
        if key == "val_loss":
            continue
        points = [(h["epoch"], h[key]) for h in history if key in h and np.isfinite(h[key])]
        if points:
            axes[1].plot(*zip(*points), label=key)
    axes[1].set(xlabel="epoch", ylabel="metric value", title="validation metrics")
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, out_dir / "training_curves.png")


def bar_per_case(out_dir: Path, names: list[str], values: list[float], ylabel: str, title: str,
                 filename: str) -> Path:
    fig, ax = plt.subplots(figsize=(max(4, 0.3 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), values)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set(xlabel="test case", ylabel=ylabel, title=title)
    return _save(fig, out_dir / filename)


def predicted_vs_true(out_dir: Path, truth: np.ndarray, predicted: np.ndarray, baseline: np.ndarray | None,
                      names: list[str], title: str) -> Path:
    """One panel per target: network (and baseline) prediction against the true value, with the identity line."""
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False, constrained_layout=True)
    for j, (ax, name) in enumerate(zip(axes[0], names)):
        lo, hi = truth[:, j].min(), truth[:, j].max()
        if baseline is not None:
            ax.scatter(truth[:, j], baseline[:, j], s=10, alpha=0.5, label="baseline", marker="x")
        ax.scatter(truth[:, j], predicted[:, j], s=12, alpha=0.8, label="network")
        ax.plot([lo, hi], [lo, hi], ":", color="grey", label="identity")
        ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=name)
        ax.legend(fontsize=7)
    fig.suptitle(f"predicted vs true: {title}")
    return _save(fig, out_dir / "predicted_vs_true.png")


def _middle(array: np.ndarray) -> np.ndarray:
    """A 2D view of a 2D or 3D array: the middle slice along the leading axes."""
    while array.ndim > 2:
        array = array[array.shape[0] // 2]
    return array


def _show(ax, array: np.ndarray, cmap: str = "gray", **imshow):
    """A signal as a curve, an image (or a volume's middle slice) as a picture; returns the artist."""
    if array.ndim == 1:
        ax.axis("on")
        ax.tick_params(labelsize=5)
        return ax.plot(np.arange(len(array)), array, lw=0.9, color="0.2" if cmap == "gray" else "tab:blue")[0]
    return ax.imshow(_middle(array), cmap=cmap, **imshow)


CONVOLUTIONS = ("Conv1d", "Conv2d", "Conv3d")

def augmented_samples(out_dir: Path, images: np.ndarray, title: str, per_row: int = 4) -> Path:
    """A grid of training inputs after augmentation (first channel; the middle slice of 3D inputs)."""
    n = min(len(images), 2 * per_row)
    rows = (n + per_row - 1) // per_row
    fig, axes = plt.subplots(rows, per_row, figsize=(2.6 * per_row, 2.6 * rows), squeeze=False,
                             constrained_layout=True)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        _show(ax, images[i, 0])
        ax.set_title(f"sample {i}" + (" (middle slice)" if images.ndim > 4 else ""), fontsize=8)
    fig.suptitle(f"what the network saw: augmented training inputs, {title}")
    return _save(fig, out_dir / "augmented_samples.png")


def first_layer_filters(out_dir: Path, net, title: str, max_filters: int = 32, max_inputs: int = 4) -> Path:
    """The first convolution's kernels as a grid (rows: filters, columns: input channels; 3D: middle slice)."""
    first = next(m for m in net.modules() if type(m).__name__ in CONVOLUTIONS)
    weights = first.weight.detach().float().cpu().numpy()[:max_filters, :max_inputs]
    n_out, n_in = weights.shape[:2]
    columns = min(8, n_out)
    fig, axes = plt.subplots(-(-n_out // columns), columns * n_in, figsize=(1.1 * columns * n_in, 1.2 * -(-n_out // columns)),
                             squeeze=False, constrained_layout=True)
    limit = float(np.abs(weights).max()) or 1.0
    image = None
    for ax in axes.ravel():
        ax.axis("off")
    for f in range(n_out):
        for c in range(n_in):
            ax = axes[f // columns, (f % columns) * n_in + c]
            if weights.ndim == 3:  # 1D kernels: the weights as a curve over the kernel's taps
                ax.axhline(0, color="0.7", lw=0.5)
                ax.set_ylim(-limit, limit)
            image = _show(ax, weights[f, c], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_title(f"f{f} in{c}", fontsize=6)
    if weights.ndim > 3:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, label="weight")
    kernel = "x".join(map(str, first.weight.shape[2:]))
    fig.suptitle(f"{title}: first convolution, {n_out} of {first.weight.shape[0]} filters, {kernel} kernels"
                 + (" (middle slice)" if first.weight.ndim == 5 else ""))
    return _save(fig, out_dir / "first_layer_filters.png")


def feature_maps(out_dir: Path, net, image: np.ndarray, title: str, n_layers: int = 3, n_channels: int = 6,
                 multiple: int = 1) -> Path:
    """Activations of a few convolutions, from the first to the deepest, for one input (3D: middle slice).

    The input is zero-padded to a multiple of the network's downsampling (a U-Net's skips must line up).
    """
    import torch

    from sciconv.inference import pad_to_multiple

    image = pad_to_multiple(image, multiple)
    convs = [(name, m) for name, m in net.named_modules() if type(m).__name__ in CONVOLUTIONS]
    picks = [convs[i] for i in sorted({round(i * (len(convs) - 2) / max(n_layers - 1, 1)) for i in range(n_layers)})]
    saved = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: saved.__setitem__(name, out.detach()))
               for name, m in picks]
    device = next(net.parameters()).device
    try:
        with torch.no_grad():
            net.eval()(torch.from_numpy(np.ascontiguousarray(image))[None].float().to(device))
    finally:
        for handle in handles:
            handle.remove()
    fig, axes = plt.subplots(len(picks), n_channels + 1, figsize=(2.0 * (n_channels + 1), 2.1 * len(picks)),
                             squeeze=False, constrained_layout=True)
    for row, (name, _) in enumerate(picks):
        maps = saved[name][0].float().cpu().numpy()
        _show(axes[row, 0], image[0])
        axes[row, 0].set_title("input", fontsize=7)
        strongest = np.argsort(-np.abs(maps).reshape(len(maps), -1).mean(1))[:n_channels]
        for col in range(n_channels):
            ax = axes[row, col + 1]
            if col < len(strongest):
                _show(ax, maps[strongest[col]], cmap="viridis")
                ax.set_title(f"{name}\nch {strongest[col]} {tuple(maps.shape[1:])}", fontsize=6)
        for ax in axes[row]:
            if image.ndim > 2:
                ax.axis("off")
    fig.suptitle(f"{title}: feature maps (the most active channels of each layer)")
    return _save(fig, out_dir / "feature_maps.png")
