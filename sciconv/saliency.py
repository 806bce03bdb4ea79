"""Saliency for segmentation networks over monai.visualize, and its rendering.

Grad-CAM needs one score per class; a segmenter gives a map per class. The
wrapper reduces each class's logit map to its spatial mean, so Grad-CAM for
class c shows which regions raise the network's belief in c across the image.
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

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2).mean(-1)


def class_saliency(net: nn.Module, image: np.ndarray, classes: list[int], method: str,
                   target_layer: str, patch_size) -> dict[int, np.ndarray]:
    """One map in [0, 1] per requested class, the image's spatial shape."""
    from monai.visualize import GradCAM, OcclusionSensitivity

    wrapper = ClassScores(net).eval()
    x = torch.from_numpy(np.ascontiguousarray(image))[None].float()
    maps = {}
    if method == "gradcam":
        cam = GradCAM(nn_module=wrapper, target_layers=f"net.{target_layer}")
        for c in classes:
            maps[c] = cam(x, class_idx=c)[0, 0].detach().cpu().numpy()
    else:
        occlusion = OcclusionSensitivity(wrapper, mask_size=[max(3, s // 16) for s in patch_size], n_batch=16)
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
        im = ax.imshow(saliency, cmap="inferno", alpha=0.55, vmin=0, vmax=1)
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
