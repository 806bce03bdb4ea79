"""Which networks exist and what they output, known without importing torch (the config checks at
load time and the workflow at parse time ask): the builders are in sciconv.models."""

SEGMENTERS = ("unet", "basic_unet", "segresnet")


def is_segmenter(name: str) -> bool:
    """A dense network: one output per voxel (segmentation), not one row per image."""
    return name in SEGMENTERS
