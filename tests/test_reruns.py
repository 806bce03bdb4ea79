"""Edit one key, rerun: `snakemake -n` after a real pipeline plans exactly the steps that read that key.

One real run of two shrunk CCD datasets, then each edit of the matrix below applied to the dataset
YAML (or the global config), dry-run, and undone. A second dataset checks that an edit of one
dataset plans nothing of the other.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, shrunk_ccd_config

pytestmark = pytest.mark.e2e

DATA_STEPS = ("simulate", "ingest", "split", "preprocess")
MODEL_STEPS = ("plan", "train", "evaluate", "explain")
EVERYTHING = {*DATA_STEPS, *MODEL_STEPS}
# the plan reads the model and train sections (it plans what they leave out), so their edits rerun it too
TRAINING_EDIT = {*MODEL_STEPS}
AFTER_TRAINING = {"train", "evaluate", "explain"}


def snakemake(project: Path, env: dict, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(project), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def planned(project: Path, env: dict) -> set[tuple[str, str | None]]:
    """(rule, dataset) of every job `snakemake -n` plans; the summary has no dataset."""
    run = snakemake(project, env, "-n", "--cores", "2", timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    jobs, rule = set(), None
    for line in run.stdout.splitlines():
        found = re.match(r"\s*(?:local)?rule (\w+):", line)
        if found:
            rule = found.group(1)
            if rule == "summary":
                jobs.add(("summary", None))
            continue
        found = re.match(r"\s+wildcards: dataset=(\w+)", line)
        if found and rule:
            jobs.add((rule, found.group(1)))
    return jobs


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    project = tmp_path_factory.mktemp("reruns")
    (project / "config/datasets").mkdir(parents=True)
    (project / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["ccd_micro", "ccd_other"], "seed": 7,
                                                                "device": "cpu"}))
    (project / "config/datasets/ccd_micro.yaml").write_text(yaml.safe_dump(shrunk_ccd_config(n_frames=10, epochs=1)))
    other = shrunk_ccd_config(n_frames=8, size=48, epochs=1)
    other["explain"]["n_samples"] = 1
    other["source"]["events_per_frame"]["alpha"] = 1.0  # every class seen in 8 small frames, whatever the draws
    (project / "config/datasets/ccd_other.yaml").write_text(yaml.safe_dump(other))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MLFLOW_TRACKING_URI", None)
    run = snakemake(project, env, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    return project, env


def edit_dataset(change):
    def apply(project: Path, name: str = "ccd_micro"):
        path = project / f"config/datasets/{name}.yaml"
        cfg = yaml.safe_load(path.read_text())
        change(cfg)
        path.write_text(yaml.safe_dump(cfg))
    return apply


def set_key(section: str, key: str, value):
    return edit_dataset(lambda cfg: cfg.setdefault(section, {}).__setitem__(key, value))


def edit_seed(project: Path):
    path = project / "config/config.yaml"
    path.write_text(path.read_text().replace("seed: 7", "seed: 8"))


def add_comment(project: Path):
    path = project / "config/datasets/ccd_micro.yaml"
    path.write_text("# a note to self\n" + path.read_text())


def of(steps, *datasets) -> set:
    return {(step, name) for step in steps for name in datasets} | {("summary", None)}


MATRIX = {
    "source.readout_noise_e": (set_key("source", "readout_noise_e", 2.5), of(EVERYTHING, "ccd_micro")),
    "preprocess.channels": (edit_dataset(lambda cfg: cfg["preprocess"]["channels"][0].__setitem__("scale_e", 25.0)),
                            of({"preprocess", *MODEL_STEPS}, "ccd_micro")),
    "split.val_fraction": (set_key("split", "val_fraction", 0.25), of({"split", *MODEL_STEPS}, "ccd_micro")),
    # the seed draws the simulated frames of every dataset, so everything of both reruns
    "global seed": (edit_seed, of(EVERYTHING, "ccd_micro", "ccd_other")),
    "model.num_res_units": (set_key("model", "num_res_units", 0), of(TRAINING_EDIT, "ccd_micro")),
    "train.learning_rate": (set_key("train", "learning_rate", 0.001), of(TRAINING_EDIT, "ccd_micro")),
    "train.time_budget_min": (set_key("train", "time_budget_min", 3), of(TRAINING_EDIT, "ccd_micro")),
    "init_from": (edit_dataset(lambda cfg: cfg.__setitem__("init_from", "results/ccd_other/model")),
                  of(AFTER_TRAINING, "ccd_micro")),
    "explain.n_samples": (set_key("explain", "n_samples", 1), of({"explain"}, "ccd_micro")),
    "description": (edit_dataset(lambda cfg: cfg.__setitem__("description", "reworded")), set()),
    "a comment": (add_comment, set()),
    "another dataset's explain.n_samples": (lambda project: set_key("explain", "n_samples", 2)(project, "ccd_other"),
                                            of({"explain"}, "ccd_other")),
}


def test_a_finished_pipeline_plans_nothing(pipeline):
    project, env = pipeline
    assert planned(project, env) == set()


@pytest.mark.parametrize("edited", list(MATRIX))
def test_an_edit_reruns_exactly_the_steps_that_read_it(pipeline, edited):
    project, env = pipeline
    edit, expected = MATRIX[edited]
    saved = {path: path.read_text() for path in (project / "config").rglob("*.yaml")}
    try:
        edit(project)
        assert planned(project, env) == expected
    finally:
        for path, text in saved.items():
            path.write_text(text)


def test_delete_all_output_leaves_only_the_resumable_checkpoint_and_the_logs(pipeline, tmp_path):
    import shutil

    project, env = pipeline
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    run = snakemake(copy, env, "--delete-all-output", "--cores", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    left = sorted(str(p.relative_to(copy / "results")) for p in (copy / "results").rglob("*") if p.is_file())
    # last.pt is kept on purpose (an interrupted training resumes from it); the rest is MLflow's store,
    # the step locks, and the benchmark records of the jobs that ran
    unexpected = [p for p in left if not (p.endswith("model/last.pt") or p.startswith(("mlflow.db", "mlartifacts/",
                                                                                        "benchmarks/"))
                                          or Path(p).name.startswith(".sciconv-"))]
    assert unexpected == []
