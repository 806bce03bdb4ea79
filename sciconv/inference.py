"""Load a trained model and run it on whole images (sliding window), the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sciconv import models


def load_checkpoint(path: Path | str) -> dict:
    import pickle

    from sciconv.errors import PredictError

    try:
        # weights_only: a checkpoint is data; it must not be able to run code when loaded.
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = str(err).split("GLOBAL ")[-1].split(" ")[0] if "GLOBAL " in str(err) else "a Python object"
        raise PredictError(f"{path}: refused: the file holds code objects ({found}), not only weights and data, "
                           "and loading it could run that code. A checkpoint sciconv writes holds none; take the "
                           "file again from where it was trained, or retrain") from err


def load_model(path: Path | str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    checkpoint = load_checkpoint(path)
    net = models.build(checkpoint["model_args"])
    net.load_state_dict(checkpoint["model_state"])
    return net.to(device).eval(), checkpoint


class EnsembleNet(torch.nn.Module):
    """Several folds' networks as one network, so every inference path (sliding windows, mirroring,
    batches) serves an ensemble unchanged. average='probabilities': the mean of the members' softmax,
    returned as its logarithm, so the softmax those paths apply gives that mean back exactly;
    average='outputs': the mean of the members' outputs, each first mapped by its own scale and shift
    (regressors trained on different folds standardise their targets differently)."""

    def __init__(self, nets: list[torch.nn.Module], average: str, scales=None, shifts=None):
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)
        self.average = average
        k = len(nets)
        self.register_buffer("scales", torch.as_tensor(scales if scales is not None else [[1.0]] * k, dtype=torch.float32))
        self.register_buffer("shifts", torch.as_tensor(shifts if shifts is not None else [[0.0]] * k, dtype=torch.float32))

    def forward(self, x):
        if self.average == "probabilities":
            mean = torch.stack([torch.softmax(net(x).float(), dim=1) for net in self.nets]).mean(0)
            return torch.log(mean.clamp_min(1e-12))
        outputs = [net(x).float() * self.scales[i] + self.shifts[i] for i, net in enumerate(self.nets)]
        return torch.stack(outputs).mean(0)


def saliency_network(net: torch.nn.Module) -> torch.nn.Module:
    """The one network saliency is computed on: an ensemble's first member (layer names are per network;
    explain shows the same fold)."""
    return net.nets[0] if isinstance(net, EnsembleNet) else net


def load_ensemble(members: list[Path | str], device: torch.device, average: str,
                  scale_shift=None) -> tuple[torch.nn.Module, list[dict]]:
    """The members' networks as one EnsembleNet, and their checkpoints; scale_shift(checkpoint) gives a
    member's (scale, shift) per output where average='outputs'."""
    nets, checkpoints = [], []
    for path in members:
        net, checkpoint = load_model(path, device)
        nets.append(net)
        checkpoints.append(checkpoint)
    scales = shifts = None
    if scale_shift is not None:
        scales, shifts = zip(*(scale_shift(c) for c in checkpoints))
    return EnsembleNet(nets, average, scales, shifts).to(device).eval(), checkpoints


def ensemble_checkpoint(task: str, checkpoints: list[dict], chosen: dict) -> dict:
    """The checkpoint an ensemble infers with: the first member's (config, classes, patch size), what the
    task takes from all members, and what cross-validation chose (threshold, post-processing)."""
    from sciconv.tasks import task_module

    return checkpoints[0] | task_module(task).ensemble_extras(checkpoints) | chosen


def load_ensemble_file(path: Path | str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """An ensemble.json that evaluate wrote: its fold members as one network, and its checkpoint."""
    import json

    from sciconv.errors import PredictError
    from sciconv.tasks import task_for, task_module

    path = Path(path)
    spec = json.loads(path.read_text())
    members = [path.parent / member for member in spec["members"]]
    missing = [str(m) for m in members if not m.is_file()]
    if missing:
        raise PredictError(f"{path}: the ensemble's members {', '.join(missing)} are missing; rerun "
                           "`sciconv train --fold N` for them and `sciconv evaluate`")
    task = task_for(spec["task"])
    scale_shift = task_module(spec["task"]).member_scale_shift if task.ensemble_average == "outputs" else None
    net, checkpoints = load_ensemble(members, device, task.ensemble_average, scale_shift)
    checkpoint = ensemble_checkpoint(spec["task"], checkpoints, spec["chosen"])
    return net, checkpoint | {"mlflow_run_id": spec["mlflow_run_id"]}


def autocast(device: torch.device, enabled: bool = True):
    """The one mixed-precision switch: bf16 autocast on CUDA when supported, fp16 otherwise, nothing on CPU."""
    if device.type != "cuda" or not enabled:
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def pad_to_multiple(array: np.ndarray, multiple: int, leading: int = 1) -> np.ndarray:
    """Zero-pad the spatial axes (those after the first `leading`) at their far end to a multiple of
    `multiple`: a whole image through a U-Net needs sizes its downsampling divides."""
    return np.pad(array, [(0, 0)] * leading + [(0, -s % multiple) for s in array.shape[leading:]])


@torch.no_grad()
def segment_logits(net: torch.nn.Module, images: torch.Tensor, patch_size, device: torch.device,
                   amp: bool = True) -> torch.Tensor:
    """Logits over whole images (B, C, *spatial) by Gaussian-weighted sliding windows of the training patch size."""
    from monai.inferers import sliding_window_inference

    with autocast(device, amp):
        logits = sliding_window_inference(images.to(device), roi_size=list(patch_size), sw_batch_size=8,
                                          predictor=net, overlap=0.25, mode="gaussian")
    return logits.float()


def mirror_combinations(axes) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes to flip together, the identity first: 2^k passes, as nnU-Net mirrors."""
    from itertools import combinations

    axes = tuple(axes or ())
    return [subset for n in range(len(axes) + 1) for subset in combinations(axes, n)]


def tta_axes(cfg: dict) -> tuple[int, ...]:
    """The spatial axes test-time mirroring flips for a dataset's resolved config (none when tta is none;
    a checkpoint from before evaluate.tta existed has none)."""
    evaluate = cfg.get("evaluate") or {}
    return tuple(evaluate.get("tta_axes") or ()) if evaluate.get("tta") == "mirror" else ()


@torch.no_grad()
def segment_probabilities(net: torch.nn.Module, images: torch.Tensor, patch_size, device: torch.device,
                          amp: bool = True, mirror_axes=()) -> torch.Tensor:
    """Softmax class probabilities over whole images (B, C, *spatial), averaged over the mirrored inputs
    (each flipped back before it is added)."""
    total = None
    for flipped in mirror_combinations(mirror_axes):
        dims = [axis + 2 for axis in flipped]
        logits = segment_logits(net, images.flip(dims) if dims else images, patch_size, device, amp)
        probabilities = torch.softmax(logits.flip(dims) if dims else logits, dim=1)
        total = probabilities if total is None else total + probabilities
    return total / len(mirror_combinations(mirror_axes))


def segment(net, image: np.ndarray, patch_size, device, amp: bool = True, mirror_axes=()) -> np.ndarray:
    """Integer class map of one image (C, *spatial)."""
    probabilities = segment_probabilities(net, torch.from_numpy(np.ascontiguousarray(image))[None], patch_size,
                                          device, amp, mirror_axes)
    return probabilities.argmax(1)[0].cpu().numpy().astype(np.uint8)


@torch.no_grad()
def batched_outputs(net: torch.nn.Module, images: list[np.ndarray], device: torch.device, amp: bool = True,
                    batch_size: int = 16, mirror_axes=(), activation=None) -> torch.Tensor:
    """Outputs (N, K) of an image-level network over whole images, in batches, on the CPU in fp32: the
    activation of the raw outputs (none: as they are), averaged over the mirrored inputs."""
    net.eval()
    combos = mirror_combinations(mirror_axes)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.stack(images[start:start + batch_size])).float().to(device)
        total = None
        for flipped in combos:
            dims = [axis + 2 for axis in flipped]
            with autocast(device, amp):
                raw = net(batch.flip(dims) if dims else batch).float()
            value = activation(raw) if activation else raw
            total = value if total is None else total + value
        out.append((total / len(combos)).cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def predict_probabilities(net: torch.nn.Module, images: list[np.ndarray], device: torch.device, amp: bool = True,
                          batch_size: int = 16, mirror_axes=()) -> np.ndarray:
    """Softmax class probabilities (N, K) of whole images (averaged over the mirrored inputs)."""
    return batched_outputs(net, images, device, amp, batch_size, mirror_axes,
                           activation=lambda raw: torch.softmax(raw, dim=1)).numpy()
