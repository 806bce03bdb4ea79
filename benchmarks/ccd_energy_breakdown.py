"""Per energy bin, how much of each true tritium cluster the CNN and the classical baseline label tritium.

Run after the pipeline, from the project folder:
    python benchmarks/ccd_energy_breakdown.py [dataset]   (default: ccd_demo)
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from skimage import measure

from sciconv import data
from sciconv.config import load_dataset, load_global
from sciconv.domains import ccd
from sciconv.inference import load_model, segment
from sciconv.paths import DatasetPaths

BINS_KEV = [(0, 2), (2, 4), (4, 5.3), (5.3, 6.5), (6.5, 9), (9, 20)]


def main(name: str = "ccd_demo") -> None:
    ds = load_dataset(name, load_global())
    paths = DatasetPaths(ds.results_dir)
    device = torch.device("cpu")
    net, checkpoint = load_model(paths.model, device)
    records = data.load_records(paths.preprocessed, data.load_split(paths.split)["test"])
    clusters = []  # (energy keV, CNN tritium fraction, baseline tritium fraction, CNN X-ray fraction)
    for record in records:
        cnn = segment(net, record["image"], checkpoint["patch_size"], device)
        classical = ds.domain.baseline(record["image"], record["attrs"], ds.cfg, "mask").mask
        electrons = ccd.unscale(record["image"], ds.cfg["preprocess"])
        labels = measure.label(record["mask"][0] == ccd.TRITIUM)
        for region in measure.regionprops(labels):
            pixels = labels == region.label
            clusters.append((electrons[pixels].sum() * ccd.EV_PER_PAIR / 1000, (cnn[pixels] == ccd.TRITIUM).mean(),
                             (classical[pixels] == ccd.TRITIUM).mean(), (cnn[pixels] == ccd.OTHER_POINT).mean()))
    table = np.array(clusters)
    print(f"{name}: {len(table)} true tritium clusters in {len(records)} test frames")
    print(f"{'keV':>10} {'n':>4} {'CNN':>6} {'baseline':>9} {'CNN as X-ray':>13}")
    for lo, hi in BINS_KEV:
        rows = table[(table[:, 0] >= lo) & (table[:, 0] < hi)]
        if len(rows):
            print(f"{lo:>4}-{hi:<5} {len(rows):>4} {rows[:, 1].mean():>6.2f} {rows[:, 2].mean():>9.2f} "
                  f"{rows[:, 3].mean():>13.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
