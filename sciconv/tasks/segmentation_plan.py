"""A segmenter's plan (nnU-Net's rules within a time budget): class-sampling ratios from the class
frequencies, the U-Net's depth and widths from the patch, and the patch from the median image, the
device's ceiling and the epochs the budget must pay for. Segmentation.plan calls these."""

from __future__ import annotations

import numpy as np

MAX_PATCH_VOXELS = {("cpu", 2): 256**2, ("cpu", 3): 64**3, ("cuda", 2): 512**2, ("cuda", 3): 128**3}
MIN_NETWORK_SIDE = 8   # two stride-2 levels: the shallowest U-Net the planner builds
MIN_PATCH_SIDE = 16    # below this a patch holds too little context to be worth the faster steps


def plan_sampling(ctx, classes: dict) -> None:
    """Patch centres: two of three on foreground, shared among the foreground classes by the inverse
    square root of their voxel share (a class a hundred times rarer is centred on ten times as often),
    one of three anywhere background. nnU-Net forces a third of its patches onto foreground; sparse
    physics data (decays in a CCD frame) need more."""
    if ctx.plans("train.patch_sampling"):
        ctx.plan.set("train.patch_sampling", "class_ratios", "centre patches per class, from the class frequencies")
    if ctx.value("train.patch_sampling") != "class_ratios" or not ctx.plans("train.class_sampling_ratios"):
        return
    fractions = np.array([c["voxel_fraction"] for c in list(classes.values())[1:]])
    weights = fractions ** -0.5
    ratios = [1.0] + np.round(2.0 * weights / weights.sum(), 3).tolist()
    shares = ", ".join(f"{name} {100 * c['voxel_fraction']:.2g}%" for name, c in classes.items())
    ctx.plan.set("train.class_sampling_ratios", ratios,
                 f"2/3 of patches on foreground, split by 1/sqrt(voxel share); voxel shares: {shares}")


def unet_layout(patch: list[float], device, dims: int) -> tuple[list[int], list[int], str]:
    """Strides and widths of a U-Net for `patch`: a first level at full resolution (small objects keep
    their pixels), then stride-2 levels until the shortest axis is down to 8-16 voxels (nnU-Net goes
    on to 4), widths doubling from 32 on a GPU (nnU-Net's) or 16 on a CPU (a step about 4x cheaper),
    capped at 320 in 3D and 512 in 2D as nnU-Net caps them."""
    shortest = int(min(patch))
    # stop at 8, not nnU-Net's 4: the last levels cost the most parameters and, on a time budget, epochs
    downsamplings = max(1, min(5, int(np.log2(max(shortest, 16) / 8))))
    base = 32 if device.type == "cuda" else 16
    cap = 320 if dims == 3 else 512
    channels = [min(base * 2**i, cap) for i in range(downsamplings + 2)]
    strides = [1] + [2] * downsamplings
    reason = (f"{downsamplings} stride-2 levels after a full-resolution one: the shortest patch axis "
              f"{shortest} reaches {shortest // 2 ** downsamplings}; base width {base} on {device.type}")
    return channels, strides, reason


def square_planes(ctx) -> list[list[int]]:
    """The planes the domain's augmentation turns by 90 degrees: a patch must be square in them."""
    specs = ctx.ds.domain.augment_specs(ctx.ds.cfg["augment"])
    return [list(spec["axes"]) for spec in specs if spec["kind"] == "rot90"]


def equalise(patch: list[float], planes: list[list[int]]) -> list[float]:
    patch = list(patch)
    for a, b in planes:
        patch[a] = patch[b] = min(patch[a], patch[b])
    return patch


def first_patch(ctx, dims: int) -> list[float]:
    """The median preprocessed image, shrunk along its longest axes to the device's voxel ceiling."""
    patch = equalise(np.median(ctx.shapes, 0).astype(float).tolist(), square_planes(ctx))
    ceiling = MAX_PATCH_VOXELS[(ctx.device.type if ctx.device.type == "cuda" else "cpu", dims)]
    while np.prod(patch) > ceiling:
        patch = shrink(patch, square_planes(ctx))
    return patch


def shrink(patch: list[float], planes: list[list[int]]) -> list[float]:
    """A quarter off the longest axis (and off its partner where a plane must stay square): nnU-Net's
    way of giving up field of view where there is most of it."""
    longest = int(np.argmax(patch))
    patch = list(patch)
    patch[longest] *= 0.75
    for a, b in planes:
        if longest in (a, b):
            patch[a] = patch[b] = patch[longest]
    return patch


def plan_patch_and_network(ctx) -> None:
    from sciconv import models, planning
    from sciconv.networks import downsampling_factor
    from sciconv.runtime import log

    median = np.median(ctx.shapes, 0)
    dims = len(median)
    if median.min() < MIN_NETWORK_SIDE:
        raise planning.plan_error(ctx.ds, f"the training images' median shape is {median.tolist()}: a U-Net needs at "
                                         f"least {MIN_NETWORK_SIDE} voxels per axis; resample or resize them in "
                                         "preprocess (or read a thin volume as 2D slices)")
    planes = square_planes(ctx)
    patch = first_patch(ctx, dims) if ctx.plans("train.patch_size") else list(ctx.value("train.patch_size"))
    # epochs the YAML writes are a demand on the budget too: the patch shrinks until they fit
    wanted = planning.MIN_EPOCHS_WANTED if ctx.plans("train.epochs") else int(ctx.value("train.epochs"))
    shrunk, previous = 0, None
    while True:
        model = dict(ctx.ds.cfg["model"])
        if model["name"] == "unet" and ctx.plans("model.channels") and ctx.plans("model.strides"):
            model["channels"], model["strides"], reason = unet_layout(patch, ctx.device, dims)
            ctx.plan.set("model.channels", model["channels"], reason)
            ctx.plan.set("model.strides", model["strides"], reason)
        factor = downsampling_factor(model)
        if ctx.plans("train.patch_size"):
            patch = [max(factor, int(s) // factor * factor) for s in patch]
            ctx.plan.set("train.patch_size", patch,
                         f"median image {median.astype(int).tolist()} within the {ctx.device.type} ceiling, "
                         f"multiples of {factor}" + (f", square in the rotated planes {planes}" if planes else "")
                         + (f", shrunk {shrunk}x by a quarter to fit the time budget" if shrunk else ""))
        model_args = models.model_args(model, dims, ctx.in_channels, len(ctx.ds.class_names))
        windows = max(1.0, float(np.prod(median)) / np.prod(patch)) * 1.5  # sliding-window overlap
        ppi = ctx.ds.cfg["train"]["patches_per_image"]
        _, epochs, _ = planning.schedule(ctx, model_args, patch, ctx.n_train * ppi, windows, multiple=ppi)
        if previous is not None and epochs < 1.25 * previous[0]:
            # a smaller patch that buys few epochs (per-step overhead dominates, or the batch grew): keep the last
            epochs, ctx.plan.settings, ctx.plan.measured = previous
            break
        smaller = [float(s) for s in shrink(patch, planes)]
        can_shrink = ctx.plans("train.patch_size") and min(smaller) >= MIN_PATCH_SIDE and shrunk < 6
        if epochs >= wanted or not can_shrink:
            break
        previous = (epochs, dict(ctx.plan.settings), dict(ctx.plan.measured))
        patch, shrunk = smaller, shrunk + 1
    if ctx.plans("train.epochs"):
        planning.set_epochs(ctx, epochs)
    elif epochs < wanted:
        log.warning("train.epochs %d (as written) takes about %.1f min at the smallest patch the plan allows, "
                    "over train.time_budget_min %g: training will run past the budget", wanted,
                    wanted * ctx.plan.measured["epoch_s"] / 60 / planning.BUDGET_FOR_TRAINING,
                    ctx.ds.cfg["train"]["time_budget_min"])
