"""Ingest throughput per file format against reading the same bytes raw, and ingest's peak memory at N and 10N files.

    python benchmarks/ingest_throughput.py                 # 7 formats and one archive, N = 40 images of 256 x 256
    python benchmarks/ingest_throughput.py --n 100 --size 512 --formats dicom,fits

For each format the same random 16-bit images are written as N and as 10N files (half in each of
two class folders; npz_split: as one MedMNIST-style archive of split arrays, read by layout npz)
and ingested by the real `sciconv ingest` of a generic dataset, each run in a
fresh process whose peak resident memory is read from getrusage. "raw" reads every file's bytes
once (after a first pass, so both see a warm page cache). Ingest must stream: its peak memory at
10N files should stay within 1.5x of that at N. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

FORMATS = ("dicom", "nifti", "fits", "hdf5", "tiff", "png", "npy", "npz_split")
CONFIG_FORMAT = {"png": "image"}  # source.format's name for pictures (PNG, JPEG)
SUFFIX = {"dicom": ".dcm", "nifti": ".nii.gz", "fits": ".fits", "hdf5": ".h5", "tiff": ".tif", "png": ".png",
          "npy": ".npy", "npz_split": ".npz"}


def write(fmt: str, path: Path, image: np.ndarray, index: int) -> None:
    if fmt == "dicom":
        from sciconv.domains._mammo_physics import write_dicom

        write_dicom(path, image.astype(np.float64) / 65535.0 * 3.0 + 0.1,
                    {"patient_id": f"P{index:06d}", "laterality": "L", "view": "CC", "thickness_mm": 50.0,
                     "pixel_spacing_mm": 0.1, "bits_stored": 14, "rescale": (1.0, 0.0), "monochrome1": False})
    elif fmt == "nifti":
        import nibabel as nib

        nib.save(nib.Nifti1Image(image.astype(np.int16), np.eye(4)), path)
    elif fmt == "fits":
        from astropy.io import fits

        fits.writeto(path, image, overwrite=True)
    elif fmt == "hdf5":
        import h5py

        with h5py.File(path, "w") as f:
            f.create_dataset("image", data=image)
    elif fmt == "tiff":
        import tifffile

        tifffile.imwrite(path, image)
    elif fmt == "png":
        import imageio.v3 as iio

        iio.imwrite(path, image)
    elif fmt == "npy":
        np.save(path, image)


def write_archive(path: Path, n: int, size: int, seed: int) -> None:
    """n images as one archive of whole splits (70/15/15), labels (n, 1), as MedMNIST ships them."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"train": n - 2 * (n * 15 // 100), "val": n * 15 // 100, "test": n * 15 // 100}
    arrays = {}
    for split, k in counts.items():
        arrays[f"{split}_images"] = rng.integers(0, 4096, size=(k, size, size)).astype(np.uint16)
        arrays[f"{split}_labels"] = (np.arange(k) % 2)[:, None].astype(np.uint8)
    np.savez(path, **arrays)


def make_archive(folder: Path, n: int, size: int, seed: int) -> list[Path]:
    path = folder / "data" / "splits.npz"
    if not path.exists():
        # in a process of its own: a child's ru_maxrss starts from the RSS of the process that forked
        # it, so arrays built here would be counted as the measured ingest's memory (3x at 10N)
        code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                "from ingest_throughput import write_archive; "
                "write_archive(Path(sys.argv[2]), *map(int, sys.argv[3:]))")
        subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(path), str(n), str(size),
                        str(seed)], check=True)
    return [path]


def make_files(fmt: str, folder: Path, n: int, size: int, seed: int) -> list[Path]:
    if fmt == "npz_split":
        return make_archive(folder, n, size, seed)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        cls = "a" if i % 2 == 0 else "b"
        (folder / "data" / cls).mkdir(parents=True, exist_ok=True)
        path = folder / "data" / cls / f"img{i:06d}{SUFFIX[fmt]}"
        if not path.exists():
            # distinct content per file: ingest flags byte-identical duplicates
            write(fmt, path, rng.integers(0, 4096, size=(size, size)).astype(np.uint16), i)
        files.append(path)
    return files


def read_raw(files: list[Path]) -> tuple[float, int]:
    started, total = time.perf_counter(), 0
    for path in files:
        total += len(path.read_bytes())
    return time.perf_counter() - started, total


INGEST = """
import resource, sys, time
from sciconv.cli import main
import sciconv.io, sciconv.steps.ingest  # imported before the clock starts: it times the ingest itself
started = time.perf_counter()
rc = main(["ingest", sys.argv[1], "--config", sys.argv[2]])
elapsed = time.perf_counter() - started
print("RESULT", rc, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def ingest(folder: Path, fmt: str) -> tuple[float, int]:
    """Seconds inside `sciconv ingest` (imports excluded) and the process's peak resident bytes."""
    (folder / "config").mkdir(exist_ok=True)
    (folder / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["bench"], "results_dir": str(folder / "results"),
                                                              "mlflow_tracking_uri": f"sqlite:///{folder}/mlflow.db"}))
    source = ({"kind": "files", "layout": "npz", "path": "../data/splits.npz"} if fmt == "npz_split" else
              {"kind": "files", "layout": "folders", "path": "../data", "format": CONFIG_FORMAT.get(fmt, fmt)})
    (folder / "config/bench.yaml").write_text(yaml.safe_dump({
        "domain": "generic", "task": "classification", "classes": ["a", "b"], "source": source}))
    out = subprocess.run([sys.executable, "-c", INGEST, str(folder / "config/bench.yaml"),
                          str(folder / "config/config.yaml")], capture_output=True, text=True, cwd=folder)
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    if out.returncode != 0 or not result or result[0].split()[1] != "0":
        raise RuntimeError(f"ingest of {fmt} failed:\n{out.stderr[-3000:]}")
    _, _, seconds, peak = result[0].split()
    return float(seconds), int(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="files in the small run; the large one has 10x")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--workdir", default="benchmark-ingest")
    args = parser.parse_args()

    work = Path(args.workdir).resolve()
    rows = []
    print(f"{args.size}x{args.size} uint16 images; N={args.n} and 10N={10 * args.n} files per format", flush=True)
    for fmt in args.formats.split(","):
        row = {"format": fmt}
        for label, n in (("N", args.n), ("10N", 10 * args.n)):
            folder = work / f"{fmt}-{n}"
            files = make_files(fmt, folder, n, args.size, seed=n)
            read_raw(files)  # warm the page cache for both measurements
            raw_s, nbytes = read_raw(files)
            ingest_s, peak = ingest(folder, fmt)
            # files/s counts images (an archive's items) so that the formats compare
            row |= {f"files_{label}": n, f"mb_{label}": nbytes / 1e6, f"raw_files_s_{label}": n / raw_s,
                    f"ingest_files_s_{label}": n / ingest_s, f"ingest_mb_s_{label}": nbytes / 1e6 / ingest_s,
                    f"raw_mb_s_{label}": nbytes / 1e6 / raw_s, f"peak_mb_{label}": peak / 1e6}
        row["peak_ratio_10N_vs_N"] = row["peak_mb_10N"] / row["peak_mb_N"]
        rows.append(row)
        print(f"format={fmt} ingest_files_s={row['ingest_files_s_10N']:.1f} ingest_mb_s={row['ingest_mb_s_10N']:.1f} "
              f"raw_mb_s={row['raw_mb_s_10N']:.0f} ingest_vs_raw={row['ingest_mb_s_10N'] / row['raw_mb_s_10N']:.4f} "
              f"peak_mb_N={row['peak_mb_N']:.0f} peak_mb_10N={row['peak_mb_10N']:.0f} "
              f"peak_ratio_10N_vs_N={row['peak_ratio_10N_vs_N']:.3f}", flush=True)
    print()
    print("| format | files/s (10N) | MB/s ingest | MB/s raw read | peak MB at N | peak MB at 10N | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['ingest_files_s_10N']:.1f} | {r['ingest_mb_s_10N']:.1f} | {r['raw_mb_s_10N']:.0f} | "
              f"{r['peak_mb_N']:.0f} | {r['peak_mb_10N']:.0f} | {r['peak_ratio_10N_vs_N']:.3f} |")
    (work / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
