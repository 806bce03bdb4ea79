"""The GPU check behind benchmarks/device/run.sh: environment and physical anchors, the `gpu` tests,
training throughput on the full configs, and a real Snakemake run, into device_report.json/.md.

    python benchmarks/device/report.py OUT_DIR            # on the GPU machine (run.sh calls this)
    python benchmarks/device/report.py --smoke OUT_DIR    # the same code paths on CPU at tiny sizes

Each part runs under its own time limit (PARTS), so one slow part cannot take the others' time, and
the two report files are rewritten after every part: a run stopped from outside still leaves
everything measured so far. The pipeline run uses the shipped *_full configs with the overrides in
PIPELINE_OVERRIDES applied to copies in a scratch project (the shipped files are not edited).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from train_throughput import set_dotted, table  # noqa: E402

# seconds per part: the whole check must end inside 8 minutes on the H200. --smoke's limits are for a
# shared CPU: its tests part took 41 s on an idle 2-core machine and over 100 s beside the suite's
# other worker, so the limits catch a hang, not a slow neighbour.
PARTS = {"gpu": {"tests": 170, "throughput": 170, "pipeline": 120},
         "smoke": {"tests": 180, "throughput": 90, "pipeline": 180}}
# The datasets of the pipeline part, cut so they train inside its time (documented, not edited in place).
# ccd_planned leaves model and train to `sciconv plan`: on the GPU its plan.json holds the memory per
# sample measured by a forward and backward pass, and the step time, on the device itself. --smoke runs
# ccd_planned alone: the workflow's rules are the same for every dataset, the other two train in the
# suite's own Snakemake runs, and each dataset costs the smoke run a minute of process start-ups.
PIPELINE_OVERRIDES = {
    "gpu": {"ccd_full": {"source.n_frames": 48, "train.epochs": 4, "explain.n_samples": 2},
            "mri_seg_full": {"source.n_subjects": 12, "train.epochs": 3, "explain.n_samples": 1},
            "ccd_planned": {"source.n_frames": 48, "train.time_budget_min": 0.5, "explain.n_samples": 1}},
    "smoke": {"ccd_planned": {"source.n_frames": 10, "source.frame_size": [64, 64], "train.time_budget_min": 0.1,
                              "explain.n_samples": 1}},
}


def timed_matmul_tflops(device: torch.device, n: int, dtype: torch.dtype, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def copy_gb_s(device: torch.device, nbytes: int, repeats: int = 10) -> float:
    """Device-to-device (host memory on CPU) copy rate, counting bytes read plus bytes written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    sync(device)
    return 2 * nbytes * repeats / (time.perf_counter() - started) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(smoke: bool) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = {"device": str(device), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cpu_count": os.cpu_count(), "smoke": smoke}
    for package in ("monai", "mlflow", "snakemake", "numpy"):
        try:
            from importlib.metadata import version

            env[package] = version(package)
        except Exception as err:  # a missing wheel is what this line reports
            env[package] = f"missing ({type(err).__name__})"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "multiprocessors": props.multi_processor_count, "driver": nvidia_smi("driver_version")}
        env["bf16_matmul_tflops_8192"] = round(timed_matmul_tflops(device, 8192, torch.bfloat16), 1)
        env["d2d_copy_gb_s"] = round(copy_gb_s(device, 2 * 2**30), 1)
    else:
        env["gpu"] = "none"
        env["fp32_matmul_tflops_1024"] = round(timed_matmul_tflops(device, 1024, torch.float32), 3)
        env["host_copy_gb_s"] = round(copy_gb_s(device, 2**27), 1)
    try:
        env["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except OSError:
        env["git_commit"] = "unknown"
    return env


def nvidia_smi(field: str) -> str:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        return out.stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def run_logged(command: list[str], log: Path, timeout: int, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run a command with its output in `log`; its exit code and wall time, or that it timed out."""
    started = time.perf_counter()
    with open(log, "w") as out:
        try:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, cwd=cwd,
                                  env=env).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return {"returncode": code, "wall_s": round(time.perf_counter() - started, 1), "log": log.name}


def gpu_tests(out: Path, work: Path, smoke: bool, limit: int) -> dict:
    junit = work / "gpu_tests.xml"
    env = dict(os.environ) | ({"SCICONV_GPU_TESTS_ON_CPU": "1"} if smoke else {})
    result = run_logged([sys.executable, "-m", "pytest", "-m", "gpu", "-n", "0", "-q", "-p", "no:cacheprovider",
                         f"--junitxml={junit}", str(REPO / "tests/test_gpu.py")], out / "gpu_tests.log", limit,
                        cwd=REPO, env=env)
    cases = []
    if junit.is_file():
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
            detail = next((child.get("message", "") for child in case if child.tag in ("failure", "error", "skipped")),
                          "")
            cases.append({"test": case.get("name"), "outcome": outcome, "time_s": round(float(case.get("time", 0)), 1),
                          "message": detail[:300]})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error", "skipped")}
    return result | {"counts": counts, "cases": cases}


def throughput(out: Path, work: Path, smoke: bool, limit: int) -> dict:
    args = ["--device", "cpu", "--quick", "--datasets", "ccd_full", "--steps", "2", "--repeats", "1",
            "--workers", "1"] if smoke else ["--device", "cuda", "--steps", "20", "--repeats", "1", "--samples", "24"]
    result = run_logged([sys.executable, str(REPO / "benchmarks/train_throughput.py"), *args, "--workdir",
                         str(work / "throughput")], out / "throughput.log", limit, cwd=REPO)
    found = list((work / "throughput").glob("*/results.json"))
    rows = json.loads(found[0].read_text()) if found else []
    return result | {"rows": rows}


def pipeline(out: Path, work: Path, smoke: bool, limit: int) -> dict:
    """A real `snakemake` run of the datasets in PIPELINE_OVERRIDES, cut as it says, against sqlite."""
    project = work / "pipeline"
    shutil.rmtree(project, ignore_errors=True)
    (project / "config/datasets").mkdir(parents=True)
    overrides = PIPELINE_OVERRIDES["smoke" if smoke else "gpu"]
    datasets = list(overrides)
    for name in datasets:
        cfg = yaml.safe_load((REPO / f"config/datasets/{name}.yaml").read_text())
        for dotted, value in overrides[name].items():
            set_dotted(cfg, dotted, value)
        (project / f"config/datasets/{name}.yaml").write_text(yaml.safe_dump(cfg))
    (project / "config/config.yaml").write_text(yaml.safe_dump({"datasets": datasets, "seed": 42,
                                                                "device": "cpu" if smoke else "cuda"}))
    cores = str(min(os.cpu_count() or 2, 16))
    # greedy: Snakemake's ILP scheduler needs PuLP, a 16 MB wheel the device budget leaves behind
    result = run_logged([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(project),
                         "--cores", cores, "--scheduler", "greedy"], out / "pipeline.log", limit)
    steps = []
    for tsv in sorted((project / "results/benchmarks").glob("*/*.tsv")):
        with open(tsv) as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        steps.append({"step": tsv.parent.name, "dataset": tsv.stem, "wall_s": float(row["s"]),
                      "max_rss_mb": float(row["max_rss"]) if row["max_rss"] not in ("", "NA", "-") else None})
    metrics = {}
    for name in datasets:
        path = project / f"results/{name}/metrics.json"
        if path.is_file():
            metrics[name] = {k: v for k, v in json.loads(path.read_text()).items() if isinstance(v, (int, float))}
    for name in datasets:
        log = project / f"logs/train/{name}.log"
        if log.is_file():
            shutil.copy(log, out / f"train_{name}.log")
        plan = project / f"results/{name}/plan.json"
        if plan.is_file():
            shutil.copy(plan, out / f"plan_{name}.json")
    return result | {"overrides": overrides, "steps": steps, "metrics": metrics}


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = ["# sciconv device report", "", "## Environment", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    tests = report.get("tests")
    if tests:
        lines += ["", f"## GPU tests (exit {tests['returncode']}, {tests['wall_s']} s)", "",
                  ", ".join(f"{k}: {v}" for k, v in tests["counts"].items()), "", "| test | outcome | s | message |",
                  "|---|---|---|---|"]
        lines += [f"| {c['test']} | {c['outcome']} | {c['time_s']} | {c['message'][:120]} |" for c in tests["cases"]]
    bench = report.get("throughput")
    if bench:
        lines += ["", f"## Training throughput (exit {bench['returncode']}, {bench['wall_s']} s)", ""]
        lines += [table(bench["rows"])] if bench["rows"] else ["no rows (see throughput.log)"]
    pipe = report.get("pipeline")
    if pipe:
        lines += ["", f"## Snakemake pipeline (exit {pipe['returncode']}, {pipe['wall_s']} s)", "",
                  "Overrides: " + json.dumps(pipe["overrides"]), "", "| dataset | step | wall s | max RSS MB |",
                  "|---|---|---|---|"]
        lines += [f"| {s['dataset']} | {s['step']} | {s['wall_s']:.1f} | {s['max_rss_mb']} |" for s in pipe["steps"]]
        for name, values in pipe["metrics"].items():
            lines += ["", f"{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> None:
    (out / "device_report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "device_report.md").write_text(markdown(report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for device_report.json and device_report.md")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (the suite's check that this runs)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--only", help="comma-separated parts to run (tests, throughput, pipeline)")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU is visible: run with --smoke for the CPU check", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="sciconv-device-"))
    work.mkdir(parents=True, exist_ok=True)
    limits = PARTS["smoke" if args.smoke else "gpu"]
    wanted = args.only.split(",") if args.only else list(limits)
    started = time.perf_counter()
    report = {"environment": environment(args.smoke)}
    write(report, args.out)
    for name, part in (("tests", gpu_tests), ("throughput", throughput), ("pipeline", pipeline)):
        if name in wanted:
            report[name] = part(args.out, work, args.smoke, limits[name])
            report["total_wall_s"] = round(time.perf_counter() - started, 1)
            write(report, args.out)
            print(f"{name}: exit {report[name]['returncode']} in {report[name]['wall_s']} s", flush=True)
    failed = [name for name in wanted if report[name]["returncode"] != 0]
    print(f"device report in {args.out} ({report['total_wall_s']} s); failed parts: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
