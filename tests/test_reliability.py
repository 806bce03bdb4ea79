"""Faults survived: SIGKILL mid-epoch, a full disk, a read-only results folder."""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import time

import psutil
import pytest
import torch
import yaml
from conftest import REPO, shrunk_ccd_config


def snakemake(project, env, *args, **kwargs):
    return subprocess.Popen(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(project), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kwargs)


def training_process(project):
    """The `sciconv train` process Snakemake started for this project, or None."""
    for process in psutil.process_iter(["cmdline", "cwd"]):
        command = process.info["cmdline"] or []
        if "train" in command and any(part.endswith("sciconv") for part in command) and \
                process.info["cwd"] == str(project):
            return process
    return None


def completed_epochs(checkpoint) -> int:
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] + 1
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


def numeric(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


@pytest.mark.e2e
def test_sigkill_mid_epoch_resumes_to_the_uninterrupted_metrics(project, tool_env, tmp_path_factory):
    cfg = shrunk_ccd_config(n_frames=12, size=64, epochs=4)
    cfg["explain"]["n_samples"] = 1
    (project / "config/datasets/ccd_micro.yaml").write_text(yaml.safe_dump(cfg))
    interrupted = tmp_path_factory.mktemp("interrupted")
    shutil.copytree(project / "config", interrupted / "config")

    # the reference: one uninterrupted run, up to the test metrics (explain and the summary add nothing here)
    target = "results/ccd_micro/metrics.json"
    reference = snakemake(project, tool_env, "--cores", "2", target)
    out, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, out[-3000:]

    # the same run, its training killed with SIGKILL once two epochs are saved (the third is under way)
    first = snakemake(interrupted, tool_env, "--cores", "2", target)
    checkpoint = interrupted / "results/ccd_micro/model/last.pt"
    deadline = time.monotonic() + 600
    while completed_epochs(checkpoint) < 2:
        assert first.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    victim = training_process(interrupted)
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)
    out, _ = first.communicate(timeout=300)
    assert first.returncode != 0
    killed_at = completed_epochs(checkpoint)
    assert 2 <= killed_at < 4 and not (interrupted / "results/ccd_micro/model/model.pt").exists()

    # rerunning snakemake resumes from the checkpoint and says from which epoch
    second = snakemake(interrupted, tool_env, "--cores", "2", target)
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out[-3000:]
    log = (interrupted / "logs/train/ccd_micro.log").read_text()
    assert f"resuming from {checkpoint.relative_to(interrupted)} at epoch {killed_at + 1} of 4" in log

    # same seed: the same split, and (on CPU) the same test metrics to 1e-6
    split = lambda root: json.loads((root / "results/ccd_micro/split.json").read_text())  # noqa: E731
    assert split(project) == split(interrupted)
    metrics = lambda root: numeric(json.loads((root / "results/ccd_micro/metrics.json").read_text()))  # noqa: E731
    expected, resumed = metrics(project), metrics(interrupted)
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():
        assert resumed[key] == pytest.approx(value, abs=1e-6), key


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MB tmpfs (needs root and mount; skipped elsewhere), unmounted afterwards."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def sciconv(project, env, *args):
    return subprocess.run(["sciconv", *args], cwd=project, capture_output=True, text=True, env=env, timeout=300)


def test_full_disk_and_read_only_results_give_clear_errors(project, tool_env, small_filesystem):
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    (project / "config/config.yaml").write_text(yaml.safe_dump(config | {"results_dir": str(small_filesystem)}))
    (project / "config/datasets/ccd_micro.yaml").write_text(yaml.safe_dump(shrunk_ccd_config(n_frames=6, size=64)))
    assert sciconv(project, tool_env, "simulate", "ccd_micro").returncode == 0
    # fill the disk but for a few kB: the HDF5 store cannot be written
    filler = small_filesystem / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    run = sciconv(project, tool_env, "ingest", "ccd_micro")
    assert run.returncode != 0, run.stderr[-2000:]
    assert "no space left on the device" in run.stderr and "results_dir" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (small_filesystem / "ccd_micro/ingested.h5").exists()  # nothing half-written left as complete

    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    run = sciconv(project, tool_env, "ingest", "ccd_micro")
    assert run.returncode != 0 and "cannot write" in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]


def test_concurrent_gpu_jobs_each_take_their_own_device(tmp_path):
    """Snakemake caps GPU jobs at the GPU count but sets no CUDA_VISIBLE_DEVICES: jobs pick distinct devices."""
    import sys

    claim = ("import sys, time\n"
             "from sciconv.runtime import claim_gpu\n"
             f"print(claim_gpu(3, {str(tmp_path)!r}), flush=True)\n"
             "time.sleep(float(sys.argv[1]))\n")
    holders = [subprocess.Popen([sys.executable, "-c", claim, "30"], stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        taken = sorted(int(h.stdout.readline()) for h in holders)
        assert taken == [0, 1]
        third = subprocess.run([sys.executable, "-c", claim, "0"], capture_output=True, text=True, timeout=60)
        assert third.stdout.strip() == "2"
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    # a killed holder's device is free again
    again = subprocess.run([sys.executable, "-c", claim, "0"], capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "0"


@pytest.mark.e2e
def test_six_datasets_in_parallel_share_one_fresh_sqlite_store(project, tool_env):
    """--cores 4 over six datasets against a store that does not exist yet: every run is logged, none fails."""
    names = [f"ccd_{letter}" for letter in "abcdef"]
    simulated = shrunk_ccd_config(n_frames=12, size=64, epochs=1)
    simulated["source"]["events_per_frame"]["alpha"] = 1.0  # so that each dataset's 12 frames hold every class
    (project / "config/datasets/ccd_micro.yaml").write_text(yaml.safe_dump(simulated))
    assert sciconv(project, tool_env, "simulate", "ccd_micro").returncode == 0
    # the six read the same simulated files: the store is under test here, not six simulations
    cfg = simulated | {"source": {"kind": "files", "layout": "manifest",
                                  "manifest": str(project / "results/ccd_micro/raw/manifest.csv")}}
    for name in names:
        (project / f"config/datasets/{name}.yaml").write_text(yaml.safe_dump(cfg))
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    (project / "config/config.yaml").write_text(yaml.safe_dump(config | {"datasets": names, "train_threads": 1}))
    assert not (project / "results/mlflow.db").exists()
    # up to evaluate: training and evaluation are the steps that write to the store
    run = snakemake(project, tool_env, "--cores", "4", *[f"results/{name}/metrics.json" for name in names])
    out, _ = run.communicate(timeout=1200)
    assert run.returncode == 0, out[-4000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project}/results/mlflow.db")
    for name in names:
        metrics = json.loads((project / f"results/{name}/metrics.json").read_text())
        logged = client.get_run(metrics["mlflow_run_id"])
        assert logged.data.tags["dataset"] == name and logged.info.status == "FINISHED"
        assert logged.data.metrics["test_dice_mean"] == pytest.approx(metrics["dice_mean"])
        assert {"evaluation", "checkpoint", "plots"} <= {a.path for a in client.list_artifacts(logged.info.run_id)}
    # a busy store may make a job wait and retry (logged as "store busy"), never fail
    assert sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments()) == len(names)


@pytest.mark.e2e
@pytest.mark.parametrize("step", ["ingest", "preprocess"])
def test_sigkill_during_a_data_step_leaves_no_output_that_looks_complete(project, tool_env, step):
    cfg = shrunk_ccd_config(n_frames=160, size=64, epochs=1)
    (project / "config/datasets/ccd_micro.yaml").write_text(yaml.safe_dump(cfg))
    root = project / "results/ccd_micro"
    output = root / f"{step}ed.h5" if step == "ingest" else root / "preprocessed.h5"
    for before in ("simulate", "ingest", "split", "preprocess"):
        if before == step:
            break
        assert sciconv(project, tool_env, before, "ccd_micro").returncode == 0
    job = subprocess.Popen(["sciconv", step, "ccd_micro"], cwd=project, env=tool_env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = output.with_suffix(".h5.partial")
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.stat().st_size > 30_000):  # well into the files
        assert job.poll() is None and time.monotonic() < deadline, f"{step} ended before it could be killed"
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=60)
    assert not output.exists()  # the half-written store keeps its temporary name
    # the workflow redoes the step
    rerun = snakemake(project, tool_env, "--cores", "2", str(output.relative_to(project)))
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out[-3000:]
    import h5py

    with h5py.File(output, "r") as store:
        assert len(store["samples"]) == 160


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_results_written_atomically_follow_the_umask(tmp_path, umask, mode):
    """split.json, metrics.json, ... must be readable by collaborators exactly as the umask allows."""
    from sciconv.runtime import atomic_write_json

    previous = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "metrics.json", {"dice": 0.9})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == mode
