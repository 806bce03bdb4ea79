"""The workflow through a real SLURM cluster: a one-node cluster on this machine (.ci/slurm-local), the
snakemake SLURM executor plugin, the shipped profile, job status by squeue."""

import json
import os
import re
import shutil
import subprocess

import pytest
from conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


@pytest.fixture(scope="module")
def slurm_cluster():
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip("Debian's slurm-wlm and munge are not installed (apt install slurm-wlm munge)")
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install 'sciconv[cluster]'")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld, slurmd and munged needs root")
    started = subprocess.run([str(REPO / ".ci/slurm-local"), "start"], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    yield


def test_demo_workflow_runs_through_slurm(project, tool_env, slurm_cluster):
    run = subprocess.run(
        ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(project),
         "--workflow-profile", str(REPO / "workflow/profiles/slurm"), "--slurm-no-account",
         "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
         "--jobs", "2", "--set-threads", "train=1",
         # no GPU on this node: the profile's GPU requests are lifted, and memory fitted to it
         "--set-resources", "train:gpu=0", "train:cpus_per_gpu=0", "train:mem_mb=4000",
         "evaluate:gpu=0", "evaluate:cpus_per_gpu=0", "evaluate:mem_mb=4000",
         "explain:gpu=0", "explain:cpus_per_gpu=0", "explain:mem_mb=4000",
         "--default-resources", "mem_mb=2000", "runtime=30", "cpus_per_task=1"],
        capture_output=True, text=True, env=tool_env, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-4000:]
    metrics = json.loads((project / "results/ccd_micro/metrics.json").read_text())
    assert {"dice_mean", "baseline_dice_mean", "mlflow_run_id"} <= set(metrics)
    # every rule ran as a SLURM job: Snakemake's log names each submission and its log folder per rule
    (log,) = (project / ".snakemake/log").glob("*.snakemake.log")
    submitted = re.findall(r"has been submitted with SLURM jobid \d+ \(log: \S*/slurm_logs/rule_(\w+)/", log.read_text())
    assert {"simulate", "ingest", "split", "preprocess", "train", "evaluate", "explain"} <= set(submitted), submitted
