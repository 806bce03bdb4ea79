"""Saliency over monai.visualize for segmenters and image-level networks, and its rendering.

Grad-CAM needs one score per class; a segmenter gives a map per class. As in
Seg-Grad-CAM (Vinogradova et al. 2020, arXiv:2002.11434) the wrapper reduces
each class's logit map to its mean over the pixels predicted as that class
(over the whole image when there are none), so Grad-CAM for class c shows
what made the network find the c regions it found.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


class ClassScores(nn.Module):
    """(B, C, *spatial) logits -> (B, C) scores, so classifier saliency methods apply to a segmenter."""

    def __init__(self, net: nn.Module, regions: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        self.regions = regions  # (C, *spatial) weights, each summing to 1; None = plain spatial mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if self.regions is None:
            return logits.flatten(2).mean(-1)
        return (logits * self.regions.to(logits.device)).flatten(2).sum(-1)


def predicted_regions(prediction: np.ndarray, num_classes: int) -> torch.Tensor:
    """Per class, uniform weights over its predicted pixels (over all pixels when it was not predicted)."""
    regions = np.stack([(prediction == c) if (prediction == c).any() else np.ones_like(prediction, bool)
                        for c in range(num_classes)]).astype(np.float32)
    return torch.from_numpy(regions / regions.reshape(num_classes, -1).sum(1).reshape(-1, *[1] * prediction.ndim))


def class_saliency(net: nn.Module, image: np.ndarray, prediction: np.ndarray, num_classes: int, method: str,
                   target_layer: str, patch_size, multiple: int = 1) -> dict[int, np.ndarray]:
    """One map in [0, 1] per foreground class, the image's spatial shape.

    The whole image goes through the network at once, so it is zero-padded at the far end to a
    multiple of the network's total downsampling (`multiple`) for the skip connections to line
    up, and the maps are cropped back.
    """
    shape = prediction.shape
    if any(s % multiple for s in shape):
        from sciconv.inference import pad_to_multiple

        maps = class_saliency(net, pad_to_multiple(image, multiple), pad_to_multiple(prediction, multiple, leading=0),
                              num_classes, method, target_layer, patch_size)
        return {c: m[tuple(slice(0, s) for s in shape)] for c, m in maps.items()}
    from monai.visualize import GradCAM, OcclusionSensitivity

    classes = list(range(1, num_classes))
    wrapper = ClassScores(net, predicted_regions(prediction, num_classes)).eval()
    device = next(net.parameters()).device  # run where the model already is: no copies per image
    x = torch.from_numpy(np.ascontiguousarray(image))[None].float().to(device)
    maps = {}
    if method == "gradcam":
        cam = GradCAM(nn_module=wrapper, target_layers=f"net.{target_layer}")
        for c in classes:
            maps[c] = cam(x, class_idx=c)[0, 0].detach().cpu().numpy()
    elif method == "hirescam":
        # gradient x activation per position: in a U-Net's full-resolution decoder Grad-CAM's
        # channel-averaged gradient spreads over the whole volume, this stays on the structure
        for c in classes:
            maps[c] = hirescam(wrapper, x, c, f"net.{target_layer}")
    else:
        # Windows of an eighth of the patch with little overlap: each window costs a forward pass
        # over the whole image, so the defaults (60% overlap) take minutes per frame on a CPU.
        mask_size = [max(3, s // 8) for s in patch_size]
        occlusion = OcclusionSensitivity(wrapper, mask_size=mask_size, n_batch=16,
                                         overlap=0.25, verbose=False, activate=False)
        box = occlusion_box(prediction, mask_size) if prediction.ndim == 3 else None
        with torch.no_grad():
            sensitivity, _ = occlusion(x, b_box=box)
        for c in classes:
            # Occlusion gives the score after hiding each region: a drop means the region mattered.
            drop = -sensitivity[0, c].cpu().numpy()
            span = drop.max() - drop.min()
            normalised = (drop - drop.min()) / span if span > 0 else np.zeros_like(drop)
            maps[c] = np.zeros(prediction.shape, np.float32)
            starts = box[0::2] if box else [0] * prediction.ndim
            maps[c][tuple(slice(a, a + n) for a, n in zip(starts, normalised.shape))] = normalised
    return maps


def occlusion_box(prediction: np.ndarray, mask_size, margin_windows: int = 2) -> list[int] | None:
    """[min0, max0, min1, max1, ...] around the predicted foreground plus a margin of a few occlusion windows.

    In 3D every occluded window costs a forward pass over the volume, so occlusion is run only
    where the network found something and a little around it (the map is zero outside).
    """
    found = np.argwhere(prediction > 0)
    if not len(found):
        return None
    box = []
    for axis, (lo, hi) in enumerate(zip(found.min(0), found.max(0))):
        pad = margin_windows * mask_size[axis]
        box += [int(max(0, lo - pad)), int(min(prediction.shape[axis] - 1, hi + pad))]
    return box


def render_segmentation(path: Path, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                        maps: dict[int, np.ndarray], class_names: list[str], title: str) -> None:
    """A row: the input, the true and predicted masks, and a saliency overlay per class with its true outline."""
    panels = 3 + len(maps)
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.6), constrained_layout=True)
    shown = image[0]
    lo, hi = np.percentile(shown, [1, 99.8])
    cmap = plt.get_cmap("tab10", len(class_names))
    axes[0].imshow(shown, cmap="gray", vmin=lo, vmax=hi)
    axes[0].set_title("input")
    for ax, mask, name in ((axes[1], truth, "true mask"), (axes[2], prediction, "predicted mask")):
        ax.imshow(mask, cmap=cmap, vmin=-0.5, vmax=len(class_names) - 0.5, interpolation="nearest")
        ax.set_title(name)
    for ax, (c, saliency) in zip(axes[3:], maps.items()):
        ax.imshow(shown, cmap="gray", vmin=lo, vmax=hi)
        # opacity follows saliency: the frame stays readable where the map is near zero
        im = ax.imshow(saliency, cmap="inferno", alpha=np.clip(saliency, 0, 1) * 0.8, vmin=0, vmax=1)
        if (truth == c).any():
            ax.contour(truth == c, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(f"saliency: {class_names[c]}")
    for ax in axes:
        ax.set_xlabel("pixel")
        ax.set_ylabel("pixel")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(class_names))]
    fig.legend(handles, class_names, loc="lower center", ncol=len(class_names), fontsize=8, bbox_to_anchor=(0.5, -0.08))
    if maps:
        fig.colorbar(im, ax=axes[-1], fraction=0.046, label="saliency (normalised)")
    fig.suptitle(title)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


# --------------------------------------------------------------------------- image-level networks
class ClassEvidence(nn.Module):
    """Logits -> scores whose gradients mean "evidence for this class against the others".

    A softmax only sees differences of logits, so one raw logit can fall while its class's
    probability rises; Grad-CAM of a raw logit can then light up everything but the lesion.
    Two classes: the log-odds (l1 - l0 for class 1); more: log-softmax.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if logits.shape[1] == 2:
            odds = logits[:, 1] - logits[:, 0]
            return torch.stack([-odds, odds], dim=1)
        return torch.log_softmax(logits, dim=1)


def hirescam(model: nn.Module, x: torch.Tensor, class_idx: int, target_layer: str) -> np.ndarray:
    """HiResCAM (Draelos & Carin 2020): sum over channels of gradient x activation, position by position.

    Grad-CAM averages each channel's gradient over the map before weighting; behind global
    max pooling the gradient sits only where each channel peaks, so that average spreads a
    lesion's evidence over the whole breast. Keeping the gradient per position attributes the
    score exactly where it came from.
    """
    import torch.nn.functional as F

    layer = dict(model.named_modules())[target_layer]
    saved = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: saved.__setitem__("a", out))
    try:
        model.zero_grad(set_to_none=True)
        score = model(x)[0, class_idx]
        grad = torch.autograd.grad(score, saved["a"])[0]
    finally:
        handle.remove()
    cam = torch.relu((grad * saved["a"]).sum(1, keepdim=True))
    mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[cam.ndim]
    cam = F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)[0, 0]
    span = cam.max() - cam.min()
    return ((cam - cam.min()) / span if span > 0 else torch.zeros_like(cam)).detach().cpu().numpy()


def hirescam_raw(net: nn.Module, image: np.ndarray, output_index: int, target_layer: str) -> np.ndarray:
    """HiResCAM of one raw network output (a regression target): where its value came from."""
    device = next(net.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image))[None].float().to(device)
    return hirescam(net.eval(), x, output_index, target_layer)


def classifier_saliency(net: nn.Module, image: np.ndarray, class_idx: int, method: str,
                        target_layer: str) -> np.ndarray:
    """HiResCAM, Grad-CAM or Grad-CAM++ (monai.visualize) of one class's evidence, at image size, in [0, 1]."""
    from monai.visualize import GradCAM, GradCAMpp

    device = next(net.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image))[None].float().to(device)
    model = ClassEvidence(net).eval()
    if method == "hirescam":
        return hirescam(model, x, class_idx, f"net.{target_layer}")
    cam_class = GradCAMpp if method == "gradcampp" else GradCAM
    cam = cam_class(nn_module=model, target_layers=f"net.{target_layer}")
    return cam(x, class_idx=class_idx)[0, 0].detach().cpu().numpy()


def pointing_hit(saliency: np.ndarray, lesion: np.ndarray, tolerance_px: int) -> bool:
    """The pointing game (Zhang et al. 2018): is the saliency maximum on the object, within a tolerance?"""
    from scipy import ndimage

    if tolerance_px > 0:
        lesion = ndimage.binary_dilation(lesion > 0, iterations=tolerance_px)
    peak = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    return bool(lesion[peak])


def _views(array: np.ndarray, at: tuple[int, ...]) -> list[tuple[str, np.ndarray]]:
    """2D: the image; 3D: the three orthogonal slices through `at`, transposed so that, drawn with
    origin="lower", the later axis points up (in RAS volumes: anterior up in axial, superior up in
    sagittal and coronal slices)."""
    if array.ndim == 2:
        return [("", array)]
    return [(f"axis {axis} = {at[axis]}", np.take(array, at[axis], axis=axis).T) for axis in range(3)]


def display_channel(record: dict, domain) -> tuple[int, str]:
    """(index, name) of the channel to draw saliency over: the domain's DISPLAY_CHANNEL when the
    record's channels are named, else the last channel (named or not)."""
    channels = list(record["attrs"].get("channels") or [])
    preferred = domain.display_channel
    index = channels.index(preferred) if preferred in channels else record["image"].shape[0] - 1
    return index, channels[index] if index < len(channels) else ""


def _origin(array: np.ndarray) -> str:
    return "lower" if array.ndim == 3 else "upper"


def render_segmentation_volume(path: Path, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                               maps: dict[int, np.ndarray], class_names: list[str], title: str,
                               channel: int = -1, channel_name: str = "") -> None:
    """3D montage: per class a row of orthogonal slices through that class's saliency maximum, the
    map over the input, the true outline (cyan) and the predicted outline (yellow, dashed)."""
    shown = image[channel]
    lo, hi = np.percentile(shown, [1, 99.8])
    centre = np.argwhere(truth > 0).mean(0).round().astype(int) if truth.any() else np.array(truth.shape) // 2
    rows = [("input", None, tuple(int(c) for c in centre))]
    rows += [(f"saliency: {class_names[c]}", c, np.unravel_index(int(np.argmax(m)), m.shape)) for c, m in maps.items()]
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.2 * len(rows)), squeeze=False, constrained_layout=True)
    im = None
    for row, (name, c, at) in enumerate(rows):
        for col, (where, plane) in enumerate(_views(shown, at)):
            ax = axes[row, col]
            ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            members = (truth > 0, prediction > 0) if c is None else (truth == c, prediction == c)
            if c is not None:
                sal = _views(maps[c], at)[col][1]
                im = ax.imshow(sal, cmap="inferno", alpha=np.clip(sal, 0, 1) * 0.7, vmin=0, vmax=1, origin="lower")
            for volume, colour, style in ((members[0], "cyan", "solid"), (members[1], "yellow", "dashed")):
                outline = _views(volume, at)[col][1]
                if outline.any():
                    ax.contour(outline, levels=[0.5], colors=colour, linewidths=0.8, linestyles=style)
            ax.set_title(f"{name}, {where}", fontsize=9)
            ax.set_xlabel("voxel")
            ax.set_ylabel("voxel")
    if im is not None:
        fig.colorbar(im, ax=axes[1:, -1].tolist(), fraction=0.046, label="saliency (normalised)")
    fig.suptitle(f"{title}\n{channel_name or 'channel'} shown; cyan: true outline, yellow dashed: predicted; "
                 "slices through each map's maximum", fontsize=9)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def render_classification(path: Path, image: np.ndarray, lesion: np.ndarray | None,
                          maps: dict[str, np.ndarray], title: str, channel: int = 0) -> None:
    """Rows: the input, then one overlay per method; 3D shows orthogonal slices through the saliency maximum."""
    if image.ndim == 2:
        return render_signal(path, image, maps, title, channel)
    first_map = next(iter(maps.values()))
    at = np.unravel_index(int(np.argmax(first_map)), first_map.shape)
    shown = image[channel]
    lo, hi = np.percentile(shown, [1, 99.8])
    columns = len(_views(shown, at))
    rows = 1 + len(maps)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.2 * rows), squeeze=False,
                             constrained_layout=True)
    im = None
    for row, (name, volume) in enumerate([("input", None), *maps.items()]):
        for col, (where, plane) in enumerate(_views(shown, at)):
            ax = axes[row, col]
            ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi, origin=_origin(shown))
            if volume is not None:
                sal = _views(volume, at)[col][1]
                im = ax.imshow(sal, cmap="inferno", alpha=np.clip(sal, 0, 1) * 0.7, vmin=0, vmax=1,
                               origin=_origin(shown))
                peak = np.unravel_index(int(np.argmax(sal)), sal.shape)
                ax.plot(peak[1], peak[0], "c+", ms=10, mew=1.5)
            if lesion is not None and lesion.any():
                outline = _views(lesion, at)[col][1]
                if outline.any():
                    ax.contour(outline > 0, levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_title(f"{name} {where}".strip(), fontsize=9)
            ax.set_xlabel("pixel")
            ax.set_ylabel("pixel")
    if im is not None:
        fig.colorbar(im, ax=axes[:, -1].tolist(), fraction=0.046, label="saliency (normalised)")
    fig.suptitle(f"{title}\n(green: true lesion outline; cyan +: saliency maximum)", fontsize=9)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def render_signal(path: Path, image: np.ndarray, maps: dict[str, np.ndarray], title: str, channel: int = 0) -> None:
    """A 1D signal with each method's saliency as a filled curve under it, on the same axis."""
    shown = image[channel]
    bins = np.arange(len(shown))
    fig, axes = plt.subplots(1 + len(maps), 1, figsize=(8, 1.9 * (1 + len(maps))), sharex=True, squeeze=False,
                             constrained_layout=True)
    axes = axes[:, 0]
    axes[0].plot(bins, shown, color="0.15", lw=1)
    axes[0].set_title("input", fontsize=9)
    for ax, (name, saliency) in zip(axes[1:], maps.items()):
        ax.plot(bins, shown, color="0.6", lw=0.8)
        twin = ax.twinx()
        twin.fill_between(bins, 0, saliency, color="tab:orange", alpha=0.5, step="mid")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("saliency", fontsize=7)
        peak = int(np.argmax(saliency))
        ax.axvline(peak, color="tab:red", lw=0.8, ls="--")
        ax.set_title(f"{name} (maximum at bin {peak})", fontsize=9)
    axes[-1].set_xlabel("bin")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
