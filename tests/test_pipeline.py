"""End to end: the real Snakemake workflow on a shrunk demo config, with a real MLflow sqlite store."""

import json
import subprocess

import pytest
import yaml
from conftest import REPO, shrunk_gamma_config, shrunk_lightcone_config, shrunk_mammo_config, shrunk_mnist1d_config

pytestmark = pytest.mark.e2e


def snakemake(project, env, *args, timeout=900):
    return subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(project), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory):
    """One real `snakemake --cores 2` over five shrunk demos (CCD, mammography, light-cone, MNIST-1D and
    gamma-ray activity), run once for the tests below: each checks one thing, so one failure does not
    hide the others."""
    import os
    import sys

    from conftest import shrunk_ccd_config

    project = tmp_path_factory.mktemp("workflow")
    (project / "config/datasets").mkdir(parents=True)
    datasets = ["ccd_micro", "mammo_micro", "lightcone_micro", "mnist1d_micro", "gamma_micro"]
    (project / "config/config.yaml").write_text(yaml.safe_dump({"datasets": datasets, "seed": 7, "device": "cpu"}))
    for name, cfg in (("ccd_micro", shrunk_ccd_config()), ("mammo_micro", shrunk_mammo_config()),
                      ("lightcone_micro", shrunk_lightcone_config()), ("mnist1d_micro", shrunk_mnist1d_config()),
                      ("gamma_micro", shrunk_gamma_config("regression"))):
        (project / f"config/datasets/{name}.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ)
    env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    run = snakemake(project, env, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    from mlflow.tracking import MlflowClient

    return project, env, MlflowClient(tracking_uri=f"sqlite:///{project}/results/mlflow.db")


def ccd_run(project, client):
    metrics = json.loads((project / "results/ccd_micro/metrics.json").read_text())
    return metrics, client.get_run(metrics["mlflow_run_id"])


def test_every_step_writes_its_outputs_and_its_log(workflow_run):
    project, _, _ = workflow_run
    root = project / "results/ccd_micro"
    for name in ("raw/manifest.csv", "ingested.h5", "split.json", "preprocessed.h5", "fingerprint.json", "plan.json",
                 "model/model.pt", "metrics.json"):
        assert (root / name).is_file(), name
    for step in ("simulate", "ingest", "split", "preprocess", "plan", "train", "evaluate", "explain"):
        assert (project / f"logs/{step}/ccd_micro.log").is_file(), step
    epoch_lines = [line for line in (project / "logs/train/ccd_micro.log").read_text().splitlines() if " epoch " in line]
    assert len(epoch_lines) == 2 and all("samples_per_s=" in line and " eta=" in line for line in epoch_lines)
    assert len(sorted((root / "saliency").glob("*.png"))) == 2


def test_summary_lists_each_dataset_with_its_costs(workflow_run):
    project, _, _ = workflow_run
    summary = (project / "results/summary.md").read_text()
    for row in ("| ccd_micro | ccd | segmentation | unet | dice_mean |",
                "| mammo_micro | mammography | classification | densenet | auroc |",
                "| lightcone_micro | lightcone | regression | densenet | r2_mean |"):
        assert row in summary
    assert "ccd_micro/saliency/" in (project / "results/summary.html").read_text()
    assert "| 95% interval |" in summary
    # the rules' benchmark records reach the summary: wall time and peak memory of each of the eight steps
    assert (project / "results/benchmarks/train/ccd_micro.tsv").is_file()
    costs = summary[summary.index("## Time and peak memory per step"):].splitlines()
    assert any(line.startswith("| ccd_micro | ") and line.count(" / ") == 8 for line in costs), costs


def test_segmentation_metrics_sit_beside_the_baseline(workflow_run):
    project, _, client = workflow_run
    metrics, _ = ccd_run(project, client)
    expected = {f"dice_{c}" for c in ("tritium", "other_point", "track", "alpha")} | {
        "dice_mean", "iou_mean", "baseline_dice_tritium", "baseline_dice_mean", "n_test", "mlflow_run_id"}
    assert expected <= set(metrics)
    assert 0.0 <= metrics["baseline_dice_mean"] <= 1.0 and metrics["n_test"] >= 1
    # surface Dice at two pixels (the frames carry no spacing), and the interval of the headline metric
    assert metrics["surface_tolerance_mm"] == 2.0 and {f"nsd_{c}" for c in ("tritium", "track")} <= set(metrics)
    assert 0.0 <= metrics["dice_mean_ci_low"] <= metrics["dice_mean_ci_high"] <= 1.0


def test_the_mlflow_run_holds_params_metrics_artifacts_and_system_metrics(workflow_run):
    project, _, client = workflow_run
    metrics, run_info = ccd_run(project, client)
    assert run_info.info.status == "FINISHED"
    assert run_info.data.tags["dataset"] == "ccd_micro" and run_info.data.tags["domain"] == "ccd"
    assert "git_commit" in run_info.data.tags and run_info.data.params["train.epochs"] == "2"
    assert len(client.get_metric_history(run_info.info.run_id, "train_loss")) == 2  # one point per epoch
    assert run_info.data.metrics["test_dice_mean"] == pytest.approx(metrics["dice_mean"])
    artifacts = {a.path for a in client.list_artifacts(run_info.info.run_id)}
    assert {"saliency", "evaluation", "config", "split", "checkpoint", "data", "plots", "network", "plan"} <= artifacts
    assert {a.path for a in client.list_artifacts(run_info.info.run_id, "plan")} == {"plan/fingerprint.json",
                                                                                     "plan/plan.json"}
    assert {a.path for a in client.list_artifacts(run_info.info.run_id, "network")} == {
        "network/first_layer_filters.png", "network/feature_maps.png"}
    assert len(client.list_artifacts(run_info.info.run_id, "saliency")) == 2
    # sampled by MLflow's monitor while training ran, in the same run
    assert "system/cpu_utilization_percentage" in run_info.data.metrics
    assert "system/system_memory_usage_megabytes" in run_info.data.metrics
    (dataset_input,) = run_info.inputs.dataset_inputs  # the training data, shown in the UI's Datasets column
    assert dataset_input.dataset.name == "ccd_micro" and "preprocessed.h5" in dataset_input.dataset.source


def test_every_run_of_one_invocation_carries_its_id_and_ends_finished(workflow_run):
    project, _, client = workflow_run
    _, run_info = ccd_run(project, client)
    invocation = run_info.data.tags["snakemake_run_id"]
    every_run = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(every_run) >= 3 and {r.info.status for r in every_run} == {"FINISHED"}
    assert len(invocation) == 32 and all(r.data.tags["snakemake_run_id"] == invocation for r in every_run)


def test_the_logged_segmenter_works_on_whole_frames(workflow_run):
    """Not only on training patches: the 64x64 frames the demo simulates."""
    import mlflow
    import numpy as np
    import torch

    project, _, client = workflow_run
    _, run_info = ccd_run(project, client)
    mlflow.set_tracking_uri(f"sqlite:///{project}/results/mlflow.db")
    net = mlflow.pytorch.load_model(f"runs:/{run_info.info.run_id}/model")
    out = net(torch.zeros(3, 2, 64, 64))
    assert tuple(out.shape) == (3, 5, 64, 64) and np.isfinite(out.detach().numpy()).all()


def test_the_mammography_classifier_reads_dicom_and_registers_its_model(workflow_run):
    import mlflow
    import torch

    project, _, client = workflow_run
    mammo = project / "results/mammo_micro"
    assert len(list((mammo / "raw").glob("*.dcm"))) == 32
    metrics = json.loads((mammo / "metrics.json").read_text())
    assert {"auroc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "threshold", "n_test",
            "n_test_positive", "baseline_auroc", "saliency_hit_rate", "mlflow_run_id"} <= set(metrics)
    assert metrics["n_test_positive"] >= 1
    assert 0.0 <= metrics["ece"] <= 1.0 and 0.0 <= metrics["brier"] <= 1.0
    plots = {a.path.split("/")[-1] for a in client.list_artifacts(metrics["mlflow_run_id"], "plots")}
    assert {"roc.png", "precision_recall.png", "confusion_matrix.png", "calibration.png",
            "training_curves.png"} <= plots
    versions = client.search_model_versions("name='sciconv-mammo_micro'")
    assert [v.run_id for v in versions] == [metrics["mlflow_run_id"]]
    mlflow.set_tracking_uri(f"sqlite:///{project}/results/mlflow.db")
    net = mlflow.pytorch.load_model("models:/sciconv-mammo_micro/1")
    assert tuple(net(torch.zeros(2, 1, 64, 48)).shape) == (2, 2)


def test_the_lightcone_regressor_reports_r2_per_parameter(workflow_run):
    project, _, client = workflow_run
    metrics = json.loads((project / "results/lightcone_micro/metrics.json").read_text())
    assert {"r2_zeta", "r2_log10_tvir", "r2_r_max", "r2_mean", "baseline_r2_mean", "n_test"} <= set(metrics)
    plots = {a.path.split("/")[-1] for a in client.list_artifacts(metrics["mlflow_run_id"], "plots")}
    assert "predicted_vs_true.png" in plots


def test_signals_train_a_1d_cnn_beside_their_classical_baselines(workflow_run):
    """MNIST-1D through its package's generator (an archive, its own test set), gamma spectra through OGIP
    FITS files: each a 1D network, its classical baselines and its saliency curves."""
    import mlflow
    import torch

    project, _, client = workflow_run
    mnist = json.loads((project / "results/mnist1d_micro/metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "auroc", "baseline_accuracy", "baseline_mlp_accuracy"} <= set(mnist)
    split = json.loads((project / "results/mnist1d_micro/split.json").read_text())
    assert len(split["test"]) == 60 and all(i.startswith("test_") for i in split["test"])  # the package's own
    assert len(list((project / "results/mnist1d_micro/saliency").glob("*.png"))) == 2
    mlflow.set_tracking_uri(f"sqlite:///{project}/results/mlflow.db")
    net = mlflow.pytorch.load_model("models:/sciconv-mnist1d_micro/1")
    assert tuple(net(torch.zeros(2, 1, 40)).shape) == (2, 10)
    gamma = json.loads((project / "results/gamma_micro/metrics.json").read_text())
    assert len(list((project / "results/gamma_micro/raw").glob("*.pha"))) == 60
    assert {"r2_log10_activity_bq", "baseline_r2_log10_activity_bq", "rmse_log10_activity_bq"} <= set(gamma)
    summary = (project / "results/summary.md").read_text()
    assert "| mnist1d_micro | signals | classification | convnet | auroc |" in summary
    # a signal kept as a CSV column is predicted like the archive's items it was trained on
    import numpy as np

    from sciconv.cli import main

    archive = np.load(project / "results/mnist1d_micro/raw/mnist1d.npz")
    (project / "signal.csv").write_text("value\n" + "".join(f"{v}\n" for v in archive["test_images"][0]))
    assert main(["predict", "--model", str(project / "results/mnist1d_micro/model"), str(project / "signal.csv"),
                 "--out", str(project / "predicted")]) == 0
    row = (project / "predicted/predictions.csv").read_text().splitlines()[1].split(",")
    assert row[0].endswith("signal.csv") and row[-1] in [str(d) for d in range(10)]


def test_a_second_run_has_nothing_to_do_and_the_report_builds(workflow_run):
    project, env, _ = workflow_run
    again = snakemake(project, env, "--cores", "2", "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr
    # Snakemake's own report: the outputs marked with report(), plots and saliency included
    report = snakemake(project, env, "--report", "results/report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    page = (project / "results/report.html").read_text(errors="replace")
    assert "roc.png" in page and "metrics.json" in page and "predicted_vs_true.png" in page


def test_bad_config_stops_before_any_job(project, tool_env):
    path = project / "config/datasets/ccd_micro.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["train"]["optimiser"] = "adam"
    path.write_text(yaml.safe_dump(cfg))
    run = snakemake(project, tool_env, "--cores", "1")
    assert run.returncode != 0
    assert "ccd_micro.yaml" in run.stderr and "train.optimiser is not allowed" in run.stderr
    assert not (project / "results/ccd_micro").exists()


def test_lint_is_clean(tool_env, tmp_path):
    run = subprocess.run(["snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, env=tool_env,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_gpu_jobs_are_capped_at_the_gpus_present(project, tool_env):
    """With one GPU, two jobs that each need it run one after the other, even with free cores."""
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    (project / "config/config.yaml").write_text(yaml.safe_dump(config | {"gpus": 1}))
    (project / "Snakefile").write_text(f'''
configfile: "config/config.yaml"
include: "{REPO}/workflow/rules/common.smk"
rule all:
    input: expand("gpu_job_{{i}}.txt", i=[1, 2])
rule gpu_job:
    output: "gpu_job_{{i}}.txt"
    resources: gpu=1
    shell: "date +%s.%N > {{output}}; sleep 2; date +%s.%N >> {{output}}"
''')
    run = subprocess.run(["snakemake", "--cores", "2"], cwd=project, capture_output=True, text=True,
                         env=tool_env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    (s1, e1), (s2, e2) = ([float(x) for x in (project / f"gpu_job_{i}.txt").read_text().split()] for i in (1, 2))
    assert s2 >= e1 or s1 >= e2, "two GPU jobs overlapped on one GPU"
