"""Saliency for segmentation networks over monai.visualize, and its rendering.

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
                   target_layer: str, patch_size) -> dict[int, np.ndarray]:
    """One map in [0, 1] per foreground class, the image's spatial shape."""
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
    else:
        # Windows of an eighth of the patch with little overlap: each window costs a forward pass
        # over the whole image, so the defaults (60% overlap) take minutes per frame on a CPU.
        occlusion = OcclusionSensitivity(wrapper, mask_size=[max(3, s // 8) for s in patch_size], n_batch=16,
                                         overlap=0.25, verbose=False, activate=False)
        with torch.no_grad():
            sensitivity, _ = occlusion(x)
        for c in classes:
            # Occlusion gives the score after hiding each region: a drop means the region mattered.
            drop = -sensitivity[0, c].cpu().numpy()
            span = drop.max() - drop.min()
            maps[c] = (drop - drop.min()) / span if span > 0 else np.zeros_like(drop)
    return maps


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
