"""Compare the class-imbalance strategies on one classification dataset, same data, same split, same seed.

    python benchmarks/imbalance_strategies.py                       # config/datasets/mammo_demo.yaml
    python benchmarks/imbalance_strategies.py --dataset config/datasets/mammo_screening.yaml

The dataset is simulated, ingested, split and preprocessed once, in a scratch project
(--workdir); each strategy then trains and evaluates on copies of those files, so only
train.imbalance differs. Prints one line per strategy and writes results.json in the workdir.
This is a measurement, not a test: it takes a few minutes per strategy on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("none", "balanced_sampler", "weighted_ce", "focal")
SHARED_FILES = ("ingested.h5", "split.json", "preprocessed.h5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(REPO / "config/datasets/mammo_demo.yaml"))
    parser.add_argument("--workdir", default="benchmark-imbalance")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from sciconv.config import load_dataset, load_global
    from sciconv.steps import evaluate, ingest, plan, preprocess, simulate, split, train

    work = Path(args.workdir).resolve()
    (work / "config/datasets").mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(Path(args.dataset).read_text())
    names = {strategy: f"imbalance_{strategy}" for strategy in STRATEGIES}
    for strategy, name in names.items():
        cfg = dict(base, train=dict(base.get("train", {}), imbalance=strategy))
        (work / f"config/datasets/{name}.yaml").write_text(yaml.safe_dump(cfg))
    (work / "config/config.yaml").write_text(yaml.safe_dump(
        {"datasets": list(names.values()), "seed": args.seed, "device": "cpu",
         "mlflow_tracking_uri": f"sqlite:///{work}/results/mlflow.db", "results_dir": str(work / "results")}))
    global_cfg = load_global(work / "config/config.yaml")
    datasets = {s: load_dataset(str(work / f"config/datasets/{n}.yaml"), global_cfg) for s, n in names.items()}

    first = datasets[STRATEGIES[0]]
    for step in (simulate, ingest, split, preprocess):
        step.run(first)
    rows = []
    for strategy, ds in datasets.items():
        if ds is not first:  # identical inputs and split: only the strategy differs
            ds.results_dir.mkdir(parents=True, exist_ok=True)
            for name in SHARED_FILES:
                shutil.copy2(first.results_dir / name, ds.results_dir / name)
            shutil.rmtree(ds.results_dir / "model", ignore_errors=True)
        started = time.perf_counter()
        plan.run(ds, threads=args.threads)  # each strategy's own plan (the YAML fixes what the demo fixes)
        train.run(ds, threads=args.threads)
        metrics = evaluate.run(ds, threads=args.threads)
        rows.append({"strategy": strategy, "seconds": round(time.perf_counter() - started, 1),
                     **{k: metrics[k] for k in ("auroc", "pr_auc", "balanced_accuracy", "sensitivity",
                                                "specificity", "baseline_auroc", "n_test", "n_test_positive")}})
    (work / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"dataset={Path(args.dataset).stem} seed={args.seed}")
    for row in rows:
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
