"""How one training epoch's time and the process's peak memory grow with dataset size and image size.

    python benchmarks/scaling.py                  # CCD frames, on the GPU when there is one
    python benchmarks/scaling.py --device cpu

Two series of four points each, every point in a fresh process (peak resident memory from
getrusage; peak GPU memory from torch): the number of frames at a fixed frame size, and the frame
size at a fixed number of frames, trained on whole frames (the patch is the frame) by sciconv's
default path (sciconv.batches, the CCD domain's augmentation, its U-Net). Simulate, ingest, split
and preprocess are the real steps. An epoch is one pass over the frames; the first epoch (cuDNN
autotuning, allocator warm-up) is not timed. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def point(n_frames: int, size: int, device: str, work: Path) -> dict:
    """One point, in this process: prepare the data, train two epochs, time the second."""
    from sciconv import data, models
    from sciconv.augment import BatchAugment
    from sciconv.config import load_dataset, load_global
    from sciconv.steps import ingest, preprocess, simulate, split
    from sciconv.steps.train import build_optimizer
    from sciconv.tasks import task_for

    folder = work / f"ccd-{n_frames}-{size}"
    (folder / "config").mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / "config/datasets/ccd_full.yaml").read_text())
    cfg["source"].update(n_frames=n_frames, frame_size=[size, size])
    cfg["split"] = {"val_fraction": 0.1, "test_fraction": 0.1}
    cfg["train"].update(patch_size=[size, size], patches_per_image=1, batch_size=8)
    (folder / "config/ccd.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["ccd"], "results_dir": str(folder / "results"),
                                                              "mlflow_tracking_uri": f"sqlite:///{folder}/mlflow.db"}))
    ds = load_dataset(str(folder / "config/ccd.yaml"), load_global(str(folder / "config/config.yaml")))
    if not (Path(ds.results_dir) / "preprocessed.h5").is_file():
        for step in (simulate, ingest, split, preprocess):
            step.run(ds)
    dev = torch.device(device)
    records = data.load_records(Path(ds.results_dir) / "preprocessed.h5",
                                data.load_split(Path(ds.results_dir) / "split.json")["train"])
    task = task_for("segmentation")(ds.cfg, ds.class_names, records, records[:1])
    net = models.build(models.model_args(ds.cfg["model"], 2, records[0]["image"].shape[0], len(ds.class_names))).to(dev)
    optimizer = build_optimizer(net.parameters(), ds.cfg["train"])
    batches = task.train_batches(BatchAugment(ds.domain.augment_specs(ds.cfg["augment"])), dev)
    amp = dev.type == "cuda"
    times = []
    for epoch in range(2):
        batches.set_epoch(epoch)
        started = time.perf_counter()
        for inputs, targets in batches:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = task.loss(net(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - started)
    return {"n_train": len(records), "frame": size, "epoch_s": times[-1],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", default="20,40,80,160", help="dataset sizes at --fixed-size")
    parser.add_argument("--sizes", default="64,128,256,512", help="frame sizes at --fixed-frames")
    parser.add_argument("--fixed-size", type=int, default=128)
    parser.add_argument("--fixed-frames", type=int, default=20)
    parser.add_argument("--workdir", default="benchmark-scaling")
    parser.add_argument("--point", help=argparse.SUPPRESS)  # internal: "frames,size" run in a child process
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    if args.point:
        frames, size = map(int, args.point.split(","))
        print("RESULT " + json.dumps(point(frames, size, args.device, work)))
        return

    def run(frames: int, size: int) -> dict:
        out = subprocess.run([sys.executable, __file__, "--point", f"{frames},{size}", "--device", args.device,
                              "--workdir", str(work)], capture_output=True, text=True)
        found = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not found:
            raise RuntimeError(out.stderr[-3000:])
        return json.loads(found[0][len("RESULT "):])

    print(f"device={args.device} torch={torch.__version__}")
    series = {"dataset size": [run(int(f), args.fixed_size) for f in args.frames.split(",")],
              "frame size": [run(args.fixed_frames, int(s)) for s in args.sizes.split(",")]}
    for name, rows in series.items():
        print(f"\n{name}\n| training frames | frame | epoch s | s per frame | peak RSS MB | peak GPU MB |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            gpu = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
            print(f"| {r['n_train']} | {r['frame']} | {r['epoch_s']:.2f} | {r['epoch_s'] / r['n_train']:.4f} | "
                  f"{r['peak_rss_mb']:.0f} | {gpu} |")
    (work / "results.json").write_text(json.dumps(series, indent=2))


if __name__ == "__main__":
    main()
