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


def segment(net, image: np.ndarray, patch_size, device, amp: bool = True) -> np.ndarray:
    """Integer class map of one image (C, *spatial)."""
    logits = segment_logits(net, torch.from_numpy(np.ascontiguousarray(image))[None], patch_size, device, amp)
    return logits.argmax(1)[0].cpu().numpy().astype(np.uint8)


@torch.no_grad()
def batched_outputs(net: torch.nn.Module, images: list[np.ndarray], device: torch.device, amp: bool = True,
                    batch_size: int = 16) -> torch.Tensor:
    """Raw outputs (N, K) of an image-level network over whole images, in batches, on the CPU in fp32."""
    net.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.stack(images[start:start + batch_size])).float().to(device)
        with autocast(device, amp):
            out.append(net(batch).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def predict_probabilities(net: torch.nn.Module, images: list[np.ndarray], device: torch.device, amp: bool = True,
                          batch_size: int = 16) -> np.ndarray:
    """Softmax class probabilities (N, K) of whole images."""
    return torch.softmax(batched_outputs(net, images, device, amp, batch_size), dim=1).numpy()
