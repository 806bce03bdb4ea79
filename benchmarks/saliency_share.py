"""Which saliency method to ship per domain: the share of each map's mass that falls inside the true objects.

    python benchmarks/saliency_share.py --results results/ccd_demo            # after `sciconv run ccd_demo`
    python benchmarks/saliency_share.py --results results/mri_seg_demo --n 4

For each segmentation saliency method the task honours, over the n test images richest in the
rarest class (the ones `sciconv explain` draws), each foreground class present in the truth gets
its map; the score is the map's mass inside that class's true pixels over its total mass. The
chance level is the class's area fraction (a map spread evenly over the frame), so the printed
ratio share / area says how many times more concentrated on the object the map is than a blank
one. A saturated map (Grad-CAM over a whole CCD frame) scores near 1x; the method to ship is the
one with the highest ratio at a cost the explain step can pay. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def mass_inside(saliency: np.ndarray, region: np.ndarray) -> float:
    """The share of a non-negative map's mass inside a boolean region (NaN for an all-zero map)."""
    total = float(saliency.sum())
    return float(saliency[region].sum()) / total if total > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="results/<dataset> of a trained segmentation dataset")
    parser.add_argument("--n", type=int, default=6, help="test images to explain")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from sciconv import data, models
    from sciconv.inference import load_model, segment
    from sciconv.paths import DatasetPaths
    from sciconv.saliency import class_saliency
    from sciconv.tasks.segmentation import Segmentation, pick_samples

    torch.set_num_threads(args.threads)
    paths = DatasetPaths(Path(args.results))
    net, checkpoint = load_model(paths.model, torch.device("cpu"))
    class_names, patch_size = checkpoint["class_names"], checkpoint["patch_size"]
    test = data.load_records(paths.preprocessed, data.load_split(paths.split)["test"])
    layer = checkpoint["config"]["explain"]["target_layer"] or models.last_conv_before_output(
        net, (1, test[0]["image"].shape[0], *patch_size))
    chosen = pick_samples(test, len(class_names), args.n)
    predictions = {r["id"]: segment(net, r["image"], patch_size, torch.device("cpu"), amp=False) for r in chosen}
    results = {}
    for method in Segmentation.explain_methods:
        shares, areas, started = [], [], time.perf_counter()
        for record in chosen:
            truth = np.asarray(record["mask_channel"][0])
            maps = class_saliency(net, record["image"], predictions[record["id"]], len(class_names), method, layer,
                                  patch_size, multiple=models.downsampling_factor(checkpoint["model_args"]))
            for c, saliency in maps.items():
                if (truth == c).any():
                    shares.append(mass_inside(np.clip(saliency, 0, None), truth == c))
                    areas.append(float((truth == c).mean()))
        share, area = float(np.nanmean(shares)), float(np.mean(areas))
        results[method] = {"mass_inside_objects": share, "object_area_fraction": area,
                           "concentration": share / area, "seconds_per_image": (time.perf_counter() - started) / len(chosen),
                           "n_maps": len(shares)}
        print(f"{method:<10} mass inside objects {share:6.3f}   object area {area:6.4f}   "
              f"{share / area:7.1f}x chance   {results[method]['seconds_per_image']:6.1f} s/image ({len(shares)} maps)")
    out = Path(args.results) / "saliency_share.json"
    out.write_text(json.dumps({"dataset": checkpoint["config"].get("domain"), "target_layer": layer,
                               "n_images": len(chosen), "methods": results}, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
