"""The accuracy recipe, part by part: one fold's model, the folds' ensemble, the ensemble with test-time
mirroring, and that with the post-processing chosen on cross-validation, on each dataset's test set.

Each dataset is the built-in demo as shipped with split.k_folds: 5 added; its five folds train once (one
`snakemake` run, folds side by side), and every variant is scored from those same models, so the rows
differ only in the recipe. Each row: the headline metric with its 95% bootstrap interval, and the
inference time over the test set (seconds, this machine; mirroring costs 2^k passes).

    python benchmarks/recipe_ablation.py                                  # ccd_demo, mri_seg_demo, mammo_demo
    python benchmarks/recipe_ablation.py --datasets ccd_demo --folds 3 --work /tmp/ablation
Prints a markdown table and writes it, with the raw numbers, under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def prepare(work: Path, name: str, folds: int, seed: int) -> Path:
    """A project with the demo's config, cross-validated, trained through the workflow up to evaluate."""
    root = work / name
    (root / "config/datasets").mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / f"config/datasets/{name}.yaml").read_text())
    cfg.setdefault("split", {})["k_folds"] = folds
    cfg["evaluate"] = {"tta": "none"}  # the variants below switch mirroring on themselves
    (root / f"config/datasets/{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / "config/config.yaml").write_text(yaml.safe_dump({"datasets": [name], "seed": seed}))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(root), "--cores",
                           str(os.cpu_count()), f"results/{name}/metrics.json"], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{name}: the workflow failed:\n{done.stderr[-3000:]}")
    return root


def score(ds, net, checkpoint: dict, test: list[dict], dev, out: Path) -> tuple[dict, float]:
    """The task's test metrics of one variant, and the seconds its inference over the test set took."""
    from sciconv.tasks import task_module

    module = task_module(ds.cfg["task"])
    started = time.perf_counter()
    module.cv_outputs(ds, net, checkpoint, test, dev)  # the inference alone, as predict would run it
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    metrics, _, _ = module.evaluate(ds, net, checkpoint, test, dev, out)
    return metrics, seconds


def ablate(root: Path, name: str) -> list[dict]:
    import copy

    import torch

    from sciconv import data
    from sciconv.config import load_dataset, load_global
    from sciconv.inference import ensemble_checkpoint, load_ensemble, load_model
    from sciconv.paths import DatasetPaths
    from sciconv.steps.evaluate import cross_validate, fold_models
    from sciconv.tasks import task_module

    os.chdir(root)
    ds = load_dataset(name, load_global("config/config.yaml"))
    dev = torch.device("cpu")
    paths = DatasetPaths(ds.results_dir)
    test = data.load_records(paths.preprocessed, data.load_split(paths.split)["test"])
    members = fold_models(ds, paths)
    mirrored = copy.deepcopy(ds)
    mirrored.cfg["evaluate"] |= {"tta": "mirror", "tta_axes": list(ds.domain.mirror_axes(ds.cfg["augment"]))}
    module = task_module(ds.cfg["task"])
    scale_shift = module.member_scale_shift if ds.task.ensemble_average == "outputs" else None
    ensemble, _ = load_ensemble(members, dev, ds.task.ensemble_average, scale_shift)
    single, first = load_model(members[0], dev)
    _, chosen, checkpoints = cross_validate(ds, paths, members, dev)
    _, chosen_mirrored, _ = cross_validate(mirrored, paths, members, dev)
    plain = {k: v for k, v in chosen.items() if k != "postprocessing"}
    variants = [("one fold (fold 0)", ds, single, first),
                ("ensemble of the folds", ds, ensemble, ensemble_checkpoint(ds.cfg["task"], checkpoints, plain)),
                ("ensemble + mirroring", mirrored, ensemble,
                 ensemble_checkpoint(ds.cfg["task"], checkpoints,
                                     {k: v for k, v in chosen_mirrored.items() if k != "postprocessing"}))]
    if "postprocessing" in chosen_mirrored:
        variants.append(("ensemble + mirroring + post-processing", mirrored, ensemble,
                         ensemble_checkpoint(ds.cfg["task"], checkpoints, chosen_mirrored)))
    rows = []
    metric = ds.task.headline_metric
    for label, variant_ds, net, checkpoint in variants:
        metrics, seconds = score(variant_ds, net, checkpoint, test, dev, root / "ablation" / label.replace(" ", "_"))
        rows.append({"dataset": name, "variant": label, "metric": metric, "value": metrics[metric],
                     "ci_low": metrics[f"{metric}_ci_low"], "ci_high": metrics[f"{metric}_ci_high"],
                     "inference_s": seconds, "n_test": len(test),
                     "postprocessing": checkpoint.get("postprocessing")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ccd_demo,mri_seg_demo,mammo_demo")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", default="benchmark-work/recipe_ablation")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    rows = []
    for name in args.datasets.split(","):
        done = work / name / "ablation.json"
        if done.is_file():  # measured in an earlier invocation with the same work folder
            rows += json.loads(done.read_text())
            continue
        started = time.perf_counter()
        root = prepare(work, name, args.folds, args.seed)
        print(f"{name}: {args.folds} folds trained and evaluated in {time.perf_counter() - started:.0f} s", flush=True)
        measured = ablate(root, name)
        done.write_text(json.dumps(measured, indent=2, default=str))
        rows += measured
    lines = ["| dataset | variant | metric | value (95% interval) | inference s | n_test |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['variant']} | {r['metric']} | {r['value']:.3f} ({r['ci_low']:.3f}-"
              f"{r['ci_high']:.3f}) | {r['inference_s']:.1f} | {r['n_test']} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    (work / "recipe_ablation.md").write_text(table + "\n")
    (work / "recipe_ablation.json").write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
