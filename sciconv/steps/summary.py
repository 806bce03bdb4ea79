"""summary: one table across datasets -> results/summary.md and results/summary.html."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

from sciconv.config import load_dataset
from sciconv.paths import DatasetPaths
from sciconv.runtime import atomic_write_text, log
from sciconv.tasks import task_for

STEPS = ("simulate", "ingest", "split", "preprocess", "plan", "train", "evaluate", "explain")


def dataset_row(name: str, global_cfg: dict) -> dict:
    ds = load_dataset(name, global_cfg)
    paths = DatasetPaths(ds.results_dir)
    metric = task_for(ds.cfg["task"]).headline_metric
    row = {"dataset": name, "domain": ds.cfg["domain"], "task": ds.cfg["task"], "model": ds.cfg["model"]["name"],
           "metric": metric, "value": None, "interval": None, "baseline": None, "n_test": None, "train_s": None,
           "run": None,
           "n_rejected": None, "plots": []}
    if paths.metrics.is_file():
        metrics = json.loads(paths.metrics.read_text())
        row |= {"value": metrics.get(metric), "baseline": metrics.get(f"baseline_{metric}"),
                "n_test": metrics.get("n_test"), "run": metrics.get("mlflow_run_id")}
        low, high = metrics.get(f"{metric}_ci_low"), metrics.get(f"{metric}_ci_high")
        if low is not None and high is not None:
            row["interval"] = f"{low:.3f}-{high:.3f}"
    # a cross-validated dataset's training time is its folds' together
    trained = [paths.of_fold(f) for f in ds.cv_folds] or [paths]
    if all((p.model_dir / "run.json").is_file() for p in trained):
        import torch

        row["train_s"] = sum(epoch.get("epoch_time_s", 0.0) for p in trained
                             for epoch in torch.load(p.model, map_location="cpu", weights_only=True).get("history", []))
    if paths.rejected.is_file():
        row["n_rejected"] = len(paths.rejected.read_text().splitlines()) - 1
    results_root = Path(global_cfg["results_dir"])
    row["costs"] = step_costs(name, results_root)
    row["plots"] = [str(p.relative_to(results_root)) for folder in (paths.root / "plots", paths.saliency)
                    for p in sorted(folder.glob("*.png"))]
    return row


def step_costs(name: str, results_root: Path) -> dict[str, tuple[float, float | None]]:
    """Wall seconds and peak memory (MB) of each step's last run, from the rules' benchmark: records
    (results/benchmarks/<step>/<dataset>.tsv); steps run outside Snakemake have none."""
    costs = {}
    for step in STEPS:
        # a cross-validated training is one record per fold: their seconds summed, the largest peak
        found = [results_root / "benchmarks" / step / f"{name}.tsv"] + sorted(
            (results_root / "benchmarks" / step).glob(f"{name}_fold*.tsv"))
        records = []
        for path in (p for p in found if p.is_file()):
            with open(path, newline="") as handle:
                record = next(csv.DictReader(handle, delimiter="\t"), None)
            if record:
                rss = record.get("max_rss", "")
                records.append((float(record["s"]), float(rss) if rss.replace(".", "", 1).isdigit() else None))
        if records:
            peaks = [r[1] for r in records if r[1] is not None]
            costs[step] = (sum(r[0] for r in records), max(peaks) if peaks else None)
    return costs


def costs_table(rows: list[dict]) -> list[str]:
    """Markdown: one row per dataset, one 'seconds / MB' cell per step."""
    steps = [s for s in STEPS if any(s in r["costs"] for r in rows)]
    if not steps:
        return []
    lines = ["", "## Time and peak memory per step (seconds / MB)", "",
             "| dataset | " + " | ".join(steps) + " | total s |", "|" + "---|" * (len(steps) + 2)]
    for r in rows:
        cells = [f"{r['costs'][s][0]:.0f} / {_fmt(r['costs'][s][1], 0)}" if s in r["costs"] else "-" for s in steps]
        lines.append(f"| {r['dataset']} | " + " | ".join(cells) + f" | {sum(c[0] for c in r['costs'].values()):.0f} |")
    return lines


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def run(global_cfg: dict) -> None:
    rows = [dataset_row(name, global_cfg) for name in global_cfg["datasets"]]
    root = Path(global_cfg["results_dir"])
    header = ["dataset", "domain", "task", "model", "metric", "value", "95% interval", "baseline", "n_test",
              "training (s)", "rejected inputs", "MLflow run"]
    cells = [[r["dataset"], r["domain"], r["task"], r["model"], r["metric"], _fmt(r["value"]), _fmt(r["interval"]),
              _fmt(r["baseline"]), _fmt(r["n_test"]), _fmt(r["train_s"], 0), _fmt(r["n_rejected"]), _fmt(r["run"])]
             for r in rows]
    md = ["# sciconv summary", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c) + " |" for c in cells]
    md += costs_table(rows)
    for r in rows:
        if r["plots"]:
            md += ["", f"## {r['dataset']}: plots and saliency", ""] + [f"![{p}]({p})" for p in r["plots"]]
    atomic_write_text(root / "summary.md", "\n".join(md) + "\n")

    table = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    galleries = "".join(
        f"<h2>{html.escape(r['dataset'])}: plots and saliency</h2>"
        + "".join(f'<a href="{html.escape(p)}"><img src="{html.escape(p)}" style="max-width:100%"></a>'
                  for p in r["plots"]) for r in rows if r["plots"])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>sciconv summary</title>"
            f"<style>table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style></head>"
            f"<body><h1>sciconv summary</h1><table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}</tr>"
            f"{table}</table><pre>{html.escape(chr(10).join(costs_table(rows)))}</pre>{galleries}</body></html>\n")
    atomic_write_text(root / "summary.html", page)
    log.info("wrote %s and %s", root / "summary.md", root / "summary.html")
