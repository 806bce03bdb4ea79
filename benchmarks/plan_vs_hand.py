"""Planned against hand-tuned: each built-in demo as shipped, and the same data with only `domain`,
`task`, `source` and the class or target names given, everything else from `sciconv plan`.

Both runs of a pair use the same dataset name and seed, so the same simulated files and the same
split; the planned run gets train.time_budget_min equal to the wall time the hand-tuned training
took, so the comparison is at equal training time on this machine. Steps run as `sciconv <step>`
commands (explain is left out: it does not change the metric).

    python benchmarks/plan_vs_hand.py                      # four domains, seed 42, plus seeds 43, 44 for ccd
    python benchmarks/plan_vs_hand.py --domains ccd --spread-seeds
Prints a markdown table and writes it, with the raw numbers, under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEMOS = {"ccd": "ccd_demo", "mammography": "mammo_demo", "lightcone": "lightcone_demo", "mri": "mri_seg_demo"}
KEPT = ("domain", "task", "source", "classes", "targets")
STEPS = ("ingest", "split", "preprocess", "plan", "train", "evaluate")


def sciconv(project: Path, *args: str) -> float:
    """Run one sciconv command in `project`; its wall time in seconds."""
    started = time.perf_counter()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(["sciconv", *args], cwd=project, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"sciconv {' '.join(args)} in {project} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def project(root: Path, name: str, cfg: dict, seed: int) -> Path:
    (root / "config/datasets").mkdir(parents=True, exist_ok=True)
    (root / "config/config.yaml").write_text(yaml.safe_dump({"datasets": [name], "seed": seed}))
    (root / f"config/datasets/{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def run_steps(root: Path, name: str, steps) -> dict:
    """Each step's wall time; a run that finished before (metrics.json there, times.json beside it) is reused."""
    record = root / "times.json"
    if record.is_file() and (root / "results" / name / "metrics.json").is_file():
        return json.loads(record.read_text())
    times = {step: sciconv(root, step, name) for step in steps}
    record.write_text(json.dumps(times))
    return times


def run_pair(work: Path, domain: str, seed: int) -> dict:
    from sciconv.config import load_dataset, load_global

    name = DEMOS[domain]
    hand_cfg = yaml.safe_load((REPO / f"config/datasets/{name}.yaml").read_text())
    hand = project(work / f"{domain}-seed{seed}-hand", name, hand_cfg, seed)
    times = run_steps(hand, name, ("simulate", *STEPS))
    planned_cfg = {key: hand_cfg[key] for key in KEPT if key in hand_cfg}
    planned_cfg["train"] = {"time_budget_min": round(times["train"] / 60, 3)}
    planned = project(work / f"{domain}-seed{seed}-planned", name, planned_cfg, seed)
    if not (planned / "times.json").is_file():
        shutil.rmtree(planned / "results" / name / "raw", ignore_errors=True)
        shutil.copytree(hand / "results" / name / "raw", planned / "results" / name / "raw")  # the same files
    planned_times = run_steps(planned, name, STEPS)
    ds = load_dataset(str(hand / f"config/datasets/{name}.yaml"), load_global(hand / "config/config.yaml"))
    metric = ds.task.headline_metric
    if ds.cfg.get("regions"):
        metric = f"dice_{next(iter(ds.cfg['regions']))}"  # BraTS: whole tumour, as the README reports
    scores = {}
    for label, root in (("hand", hand), ("planned", planned)):
        metrics = json.loads((root / "results" / name / "metrics.json").read_text())
        scores[label] = metrics[metric]
        scores["baseline"] = metrics.get(f"baseline_{metric}")
    plan = json.loads((planned / "results" / name / "plan.json").read_text())
    return {"domain": domain, "dataset": name, "seed": seed, "metric": metric, **scores,
            "hand_train_s": round(times["train"], 1), "planned_train_s": round(planned_times["train"], 1),
            "plan_s": round(planned_times["plan"], 1),
            "plan": {k: v["value"] for k, v in plan["settings"].items()}}


def table(rows: list[dict]) -> str:
    lines = ["| domain (dataset) | metric | hand-tuned | planned | classical baseline | train s, hand / planned | plan s |",
             "|---|---|---|---|---|---|---|"]
    for domain in dict.fromkeys(r["domain"] for r in rows):
        runs = [r for r in rows if r["domain"] == domain]
        first = runs[0]

        def cell(key):
            values = [r[key] for r in runs]
            if len(values) == 1:
                return f"{values[0]:.3f}"
            return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} ({len(values)} seeds)"

        base = "n/a" if first["baseline"] is None else cell("baseline")
        lines.append(f"| {domain} ({first['dataset']}) | {first['metric']} | {cell('hand')} | {cell('planned')} | {base} "
                     f"| {first['hand_train_s']:.0f} / {first['planned_train_s']:.0f} | {first['plan_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=["ccd", "lightcone", "mammography", "mri"], choices=list(DEMOS))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--spread", default="ccd", help="the domain also run with the two next seeds")
    parser.add_argument("--work", type=Path, default=Path("benchmark-work/plan_vs_hand"))
    args = parser.parse_args()
    rows = []
    for domain in args.domains:
        seeds = [args.seed] + ([args.seed + 1, args.seed + 2] if domain == args.spread else [])
        for seed in seeds:
            rows.append(run_pair(args.work, domain, seed))
            print(json.dumps(rows[-1]), flush=True)
            (args.work / "plan_vs_hand.json").write_text(json.dumps(rows, indent=1))  # what is done survives
    import torch

    text = table(rows)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    header = f"plan_vs_hand on {device}, torch {torch.__version__}"
    print(header + "\n\n" + text)
    (args.work / "plan_vs_hand.md").write_text(header + "\n\n" + text + "\n")
    (args.work / "plan_vs_hand.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
