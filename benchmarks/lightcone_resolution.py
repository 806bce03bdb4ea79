"""What finer light-cone cells buy for R_max, and what they cost.

    python benchmarks/lightcone_resolution.py [--cells 10 5 2.5] [--box-mpc 320]   # from the repository root

At a fixed box (sky width box-mpc, z 6-12) and fixed seed, zeta and T_vir, the built-in
generator makes cones at R_max = 5, 7.5, 10, 15 and 25 Mpc for each cell size. Printed per cell size:
  - how many cells R_max's prior (5-25 Mpc) spans;
  - for each pair of neighbouring R_max values, the rms difference of their cones over the cone's
    rms: 0 means the two R_max are the same cone, so no network can tell them apart;
  - seconds to simulate one cone, and to train the lightcone demo's network on one cone
    (forward and backward, the cone downsampled 2x along the line of sight as the demo does),
    with the ratios to the coarsest cell size, measured in this process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

R_MAX_VALUES = (5.0, 7.5, 10.0, 15.0, 25.0)


def train_step_seconds(cone: np.ndarray, repeats: int = 2) -> float:
    import torch

    from sciconv.config import load_dataset, load_global
    from sciconv.models import build, model_args

    model_cfg = load_dataset("lightcone_demo", load_global("config/config.yaml")).cfg["model"]
    net = build(model_args(model_cfg, spatial_dims=3, in_channels=1, out_channels=3, input_size=None))
    n = cone.shape[2] // 2 * 2
    x = torch.as_tensor(cone[:, :, :n].reshape(*cone.shape[:2], n // 2, 2).mean(-1)[None, None], dtype=torch.float32)
    optimiser = torch.optim.AdamW(net.parameters(), 1e-3)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        optimiser.zero_grad()
        net(x).square().mean().backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))  # the first step pays for allocation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=float, nargs="+", default=[10.0, 5.0, 2.5])
    parser.add_argument("--box-mpc", type=float, default=320.0)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    from sciconv.config import schema_defaults
    from sciconv.domains import lightcone as lc

    baseline = None
    for cell in args.cells:
        sky = int(round(args.box_mpc / cell))
        src = schema_defaults(lc.SCHEMAS["source"]) | {"sky_cells": sky, "cell_mpc": cell, "z_min": 6.0, "z_max": 12.0}
        cones, seconds = [], []
        for r_max in R_MAX_VALUES:
            start = time.perf_counter()
            cone, _ = lc.simulate_lightcone(np.random.default_rng(args.seed), src,
                                            {"zeta": 30.0, "log10_tvir": 4.7, "r_max": r_max})
            seconds.append(time.perf_counter() - start)
            cones.append(cone.astype(np.float64))
        differences = [np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(a**2)) for a, b in zip(cones, cones[1:])]
        step = train_step_seconds(cones[0].astype(np.float32))
        simulate = float(np.median(seconds))
        baseline = baseline or (simulate, step)
        print(f"cell {cell:g} Mpc ({sky}^2 x {cones[0].shape[2]} cells): R_max prior spans "
              f"{5 / cell:.1f}-{25 / cell:.1f} cells")
        print("  rms difference between neighbouring R_max: " + ", ".join(
            f"{a:g}-{b:g} Mpc {d:.3f}" for a, b, d in zip(R_MAX_VALUES, R_MAX_VALUES[1:], differences)))
        print(f"  simulate {simulate:.2f} s per cone (x{simulate / baseline[0]:.1f}); "
              f"train step {step:.2f} s per cone (x{step / baseline[1]:.1f})")


if __name__ == "__main__":
    main()
