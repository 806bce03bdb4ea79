"""The CUDA path: mixed precision, memory formats, compile, every cache placement, GPU claims, NVML
metrics, sliding-window inference, evaluate and explain on the GPU.

Marked `gpu` and skipped without CUDA. `benchmarks/device/run.sh --smoke` sets
SCICONV_GPU_TESTS_ON_CPU=1, which runs the same bodies on the CPU (where the CUDA-only assertions
take their CPU form), so the tests cannot rot between the rare runs on a GPU machine.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import shrunk_ccd_config

pytestmark = pytest.mark.gpu

ON_GPU = torch.cuda.is_available()
if not ON_GPU and os.environ.get("SCICONV_GPU_TESTS_ON_CPU") != "1":
    pytest.skip("needs a CUDA GPU (SCICONV_GPU_TESTS_ON_CPU=1 runs these bodies on the CPU)", allow_module_level=True)
DEVICE = "cuda" if ON_GPU else "cpu"


def set_dotted(cfg: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        cfg = cfg.setdefault(key, {})
    cfg[leaf] = value


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A micro CCD project simulated, ingested, split and preprocessed once for the whole module."""
    from sciconv.config import load_dataset, load_global
    from sciconv.steps import ingest, plan, preprocess, simulate, split

    root = tmp_path_factory.mktemp("gpu")
    (root / "config/datasets").mkdir(parents=True)
    (root / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["ccd_micro"], "seed": 7, "device": DEVICE,
                                                             "results_dir": str(root / "results"),
                                                             "mlflow_tracking_uri": f"sqlite:///{root}/mlflow.db"}))
    (root / "config/datasets/ccd_micro.yaml").write_text(yaml.safe_dump(shrunk_ccd_config(n_frames=12, epochs=2)))
    global_cfg = load_global(root / "config/config.yaml")
    ds = load_dataset(str(root / "config/datasets/ccd_micro.yaml"), global_cfg)
    for step in (simulate, ingest, split, preprocess, plan):
        step.run(ds)
    return root, global_cfg


def dataset(prepared, **overrides):
    """The micro dataset with dotted-key overrides (train__cache='host' -> train.cache: host)."""
    from sciconv.config import load_dataset

    root, global_cfg = prepared
    cfg = shrunk_ccd_config(n_frames=12, epochs=2)
    for key, value in overrides.items():
        set_dotted(cfg, key.replace("__", "."), value)
    path = root / "config/datasets/ccd_micro.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_dataset(str(path), global_cfg)


class Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def train(prepared, **overrides) -> dict:
    """Train from scratch with the overrides; the checkpoint (history, scaler state) and the log text."""
    import shutil

    from sciconv.inference import load_checkpoint
    from sciconv.steps import train as train_step

    ds = dataset(prepared, **overrides)
    shutil.rmtree(ds.results_dir / "model", ignore_errors=True)
    logger, captured = logging.getLogger("sciconv"), Captured()
    logger.addHandler(captured)
    level, logger.level = logger.level, logging.INFO
    try:
        train_step.run(ds, device=DEVICE)
    finally:
        logger.removeHandler(captured)
        logger.setLevel(level)
    last = load_checkpoint(ds.results_dir / "model/last.pt")
    return {"ds": ds, "last": last, "losses": [h["train_loss"] for h in last["history"]], "log": "\n".join(captured.lines)}


@pytest.fixture(scope="module")
def eager(prepared):
    """The reference training: host cache, default memory format, no compile."""
    return train(prepared, train__cache="host", train__channels_last=False, train__compile=False)


def test_bf16_autocast_training_step_runs_in_bf16_and_learns():
    from monai.networks.nets import UNet

    from sciconv.inference import autocast

    dev = torch.device(DEVICE)
    torch.manual_seed(0)
    net = UNet(2, 1, 2, channels=(8, 16), strides=(2,)).to(dev)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(4, 1, 32, 32, device=dev)
    y = (x > 0.5).long()[:, 0]
    losses = []
    for _ in range(20):
        with autocast(dev, True):
            out = net(x)
            loss = torch.nn.functional.cross_entropy(out.float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    expected = torch.bfloat16 if ON_GPU and torch.cuda.is_bf16_supported() else torch.float32
    assert out.dtype == expected
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("placement", ["device", "pinned", "host", "store"])
def test_every_cache_placement_is_honoured_and_trains_alike(prepared, eager, placement):
    run = train(prepared, train__cache=placement, train__channels_last=False)
    # on a GPU no placement may silently fall back; on a CPU device and pinned mean host memory
    expected = placement if ON_GPU or placement in ("host", "store") else "host"
    assert f"in {expected} memory" in run["log"] or (expected == "store" and "in preprocessed.h5" in run["log"])
    # the same batches in the same order: only the reduction order of the kernels differs
    np.testing.assert_allclose(run["losses"], eager["losses"], rtol=0.05)


def test_fp16_with_grad_scaler_when_bf16_is_missing(prepared, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    run = train(prepared, train__amp=True)
    assert all(np.isfinite(run["losses"]))
    scaler = run["last"]["scaler_state"]
    if ON_GPU:
        assert scaler.get("scale", 0) > 0  # the scaler ran (fp16 needs it against underflow)
    else:
        assert not scaler  # no autocast on CPU, so no scaler either


@pytest.mark.parametrize("options", [{"train__channels_last": True}, {"train__compile": True}],
                         ids=["channels_last", "compile"])
def test_channels_last_and_compile_train_to_the_eager_losses(prepared, eager, options):
    run = train(prepared, **options)
    np.testing.assert_allclose(run["losses"], eager["losses"], rtol=0.05)


def test_nvml_system_metrics_reach_the_mlflow_run(prepared, eager):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=prepared[1]["mlflow_tracking_uri"])
    metrics = client.get_run(eager["last"]["mlflow_run_id"]).data.metrics
    wanted = "system/gpu_0_utilization_percentage" if ON_GPU else "system/cpu_utilization_percentage"
    assert wanted in metrics, sorted(k for k in metrics if k.startswith("system/"))


def test_claim_gpu_hands_two_processes_distinct_devices(tmp_path):
    holder = ("import sys, time; from sciconv.runtime import claim_gpu; "
              f"print(claim_gpu(2, {str(tmp_path)!r}), flush=True); time.sleep(3)")
    first = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    claimed_first = first.stdout.readline().strip()
    second = subprocess.run([sys.executable, "-c", holder.replace("time.sleep(3)", "")], capture_output=True,
                            text=True, timeout=60)
    first.wait(timeout=60)
    assert {claimed_first, second.stdout.strip()} == {"0", "1"}
    if ON_GPU:
        from sciconv.runtime import pick_device

        dev = pick_device("auto")
        assert dev.type == "cuda" and dev.index < torch.cuda.device_count()


def test_sliding_window_on_the_device_equals_the_cpu():
    """fp32 on the GPU agrees with the CPU to 1% of the logits' range (cuDNN's TF32 convolutions), and
    bf16 autocast gives the same class for at least 99% of the pixels."""
    from monai.networks.nets import UNet

    from sciconv.inference import segment_logits

    torch.manual_seed(0)
    net = UNet(2, 2, 3, channels=(8, 16, 32), strides=(2, 2)).eval()
    image = torch.randn(1, 2, 96, 80)
    reference = segment_logits(net, image, (32, 32), torch.device("cpu"), amp=False)
    dev = torch.device(DEVICE)
    fp32 = segment_logits(net.to(dev), image, (32, 32), dev, amp=False).cpu()
    scale = float(reference.abs().max())
    assert float((fp32 - reference).abs().max()) <= 0.01 * scale
    mixed = segment_logits(net, image, (32, 32), dev, amp=True).cpu()
    assert float((mixed.argmax(1) == reference.argmax(1)).float().mean()) >= 0.99


def test_evaluate_and_explain_run_on_the_device(prepared):
    from mlflow.tracking import MlflowClient

    from sciconv.steps import evaluate, explain

    run = train(prepared)
    ds = run["ds"]
    metrics = evaluate.run(ds, device=DEVICE)
    explain.run(ds, device=DEVICE)
    assert 0.0 <= metrics["dice_mean"] <= 1.0
    assert json.loads(Path(ds.results_dir / "metrics.json").read_text())["mlflow_run_id"] == metrics["mlflow_run_id"]
    assert len(list((ds.results_dir / "saliency").glob("*.png"))) == ds.cfg["explain"]["n_samples"]
    client = MlflowClient(tracking_uri=prepared[1]["mlflow_tracking_uri"])
    assert client.get_run(metrics["mlflow_run_id"]).info.status == "FINISHED"
