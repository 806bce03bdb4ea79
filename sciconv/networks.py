"""Which networks exist and what they output, known without importing torch (the config checks at
load time and the workflow at parse time ask): the builders are in sciconv.models."""

import math

from sciconv.errors import ModelConfigError

SEGMENTERS = ("unet", "basic_unet", "segresnet")


def is_segmenter(name: str) -> bool:
    """A dense network: one output per voxel (segmentation), not one row per image."""
    return name in SEGMENTERS


def downsampling_factor(args: dict) -> int:
    """The product of a segmenter's strides: every spatial size must be a multiple of it for the skips
    to line up. 1 for an image-level network, whose global pooling takes any size (check_input_size
    says how small)."""
    if not is_segmenter(args["name"]):
        return 1
    if args["name"] == "basic_unet":
        return 2**4
    if args["name"] == "segresnet":
        return 2 ** (len(args["blocks_down"]) - 1)
    return math.prod(args["strides"])


def check_input_size(args: dict, size: list[int] | tuple[int, ...], what: str = "train.patch_size") -> None:
    if args["name"] == "convnet":
        # strided convolutions, then a linear head over what is left: each stride needs a cell to halve
        factor = math.prod(args["strides"])
        if min(size) < factor:
            raise ModelConfigError(f"{what} {list(size)} is too small for convnet: its strides {args['strides']} "
                                   f"downsample by {factor}; use at least {factor} per axis, or fewer strides")
        return
    if not is_segmenter(args["name"]):
        # image-level networks end in global pooling: any size works that survives their first
        # downsamplings (a stride-2 stem and pooling, then stages that stop at one voxel)
        if min(size) < 16:
            raise ModelConfigError(f"{what} {list(size)} is too small for {args['name']}: its stem and first "
                                   "stages downsample by 16; use at least 16 per axis")
        return
    factor = downsampling_factor(args)
    bad = [s for s in size if s % factor]
    if bad:
        smaller = [max(factor, s // factor * factor) for s in size]
        larger = [-(-s // factor) * factor for s in size]
        raise ModelConfigError(
            f"{what} {list(size)} does not fit the network: the {args['name']} downsamples by {factor} in all "
            f"(strides {args['strides']}), so each size must be a multiple of {factor}; "
            f"use for example {smaller} or {larger}, or change model.strides")
