"""Shared fixtures: the repository, and the real demo config shrunk to test size."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def shrunk_ccd_config(n_frames: int = 12, size: int = 64, epochs: int = 2) -> dict:
    """config/datasets/ccd_demo.yaml as shipped, made small: the test exercises the real config."""
    cfg = yaml.safe_load((REPO / "config/datasets/ccd_demo.yaml").read_text())
    cfg["source"]["n_frames"] = n_frames
    cfg["source"]["frame_size"] = [size, size]
    # a dozen small frames at the demo's 0.2 alphas per frame would often hold none, and ingest refuses
    # a declared class without an example
    cfg["source"]["events_per_frame"]["alpha"] = 1.0
    cfg["train"].update(epochs=epochs, patch_size=[32, 32], batch_size=8, patches_per_image=2)
    cfg["explain"]["n_samples"] = 2
    return cfg


def shrunk_mammo_config(n_patients: int = 8, epochs: int = 2) -> dict:
    """config/datasets/mammo_demo.yaml as shipped, made small."""
    cfg = yaml.safe_load((REPO / "config/datasets/mammo_demo.yaml").read_text())
    cfg["source"].update(n_patients=n_patients, image_size=[128, 104], prevalence=0.25)
    cfg["preprocess"]["size"] = [64, 48]
    cfg["train"].update(epochs=epochs, batch_size=8, patch_size=[32, 32])
    cfg["model"].update(init_features=8, growth_rate=8, block_config=[2, 2])
    cfg["explain"]["n_samples"] = 1
    return cfg


def shrunk_lightcone_config(n_samples: int = 16, epochs: int = 2) -> dict:
    """config/datasets/lightcone_demo.yaml as shipped, made small."""
    cfg = yaml.safe_load((REPO / "config/datasets/lightcone_demo.yaml").read_text())
    cfg["source"].update(n_samples=n_samples, sky_cells=16, n_coeval=4, n_filter_scales=4, z_min=6.5, z_max=9.0)
    cfg["train"].update(epochs=epochs, batch_size=4)
    cfg["explain"]["n_samples"] = 1
    return cfg


def shrunk_mri_config(task: str, n_subjects: int = 10, epochs: int = 2) -> dict:
    """config/datasets/mri_seg_demo.yaml or mri_cls_demo.yaml as shipped, made small (4 mm voxels)."""
    name = "mri_seg_demo" if task == "segmentation" else "mri_cls_demo"
    cfg = yaml.safe_load((REPO / f"config/datasets/{name}.yaml").read_text())
    cfg["source"].update(n_subjects=n_subjects, voxel_sizes_mm=[[4, 4, 4], [4, 4, 6]], tumour_fraction=0.6)
    cfg["preprocess"]["spacing_mm"] = [6, 6, 6]
    cfg["train"].update(epochs=epochs)
    if task == "segmentation":
        cfg["train"].update(patch_size=[16, 16, 16], batch_size=4)
        cfg["model"].update(channels=[8, 16, 32], strides=[2, 2])
    else:
        cfg["preprocess"]["size"] = [24, 32, 24]
        cfg["train"].update(patch_size=[16, 16, 16])
    cfg["explain"]["n_samples"] = 1
    return cfg


def shrunk_mnist1d_config(n_samples: int = 300, epochs: int = 3) -> dict:
    """config/datasets/mnist1d_demo.yaml as shipped, made small (the package's generator, fewer signals)."""
    cfg = yaml.safe_load((REPO / "config/datasets/mnist1d_demo.yaml").read_text())
    cfg["source"]["n_samples"] = n_samples
    cfg["train"].update(epochs=epochs, batch_size=50)
    cfg["explain"]["n_samples"] = 1
    return cfg


def shrunk_gamma_config(task: str = "classification", n_samples: int = 60, epochs: int = 3) -> dict:
    """config/datasets/gamma_demo.yaml (classification) or gamma_activity_demo.yaml as shipped, made small."""
    name = "gamma_demo" if task == "classification" else "gamma_activity_demo"
    cfg = yaml.safe_load((REPO / f"config/datasets/{name}.yaml").read_text())
    cfg["source"].update(n_samples=n_samples, n_channels=256)
    cfg["preprocess"]["length"] = 128
    cfg["train"].update(epochs=epochs, batch_size=16)
    cfg["explain"]["n_samples"] = 1
    return cfg


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with config/config.yaml and one micro CCD dataset; cwd is moved there."""
    (tmp_path / "config/datasets").mkdir(parents=True)
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["ccd_micro"], "seed": 7,
                                                                 "device": "cpu"}))
    (tmp_path / "config/datasets/ccd_micro.yaml").write_text(yaml.safe_dump(shrunk_ccd_config()))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def tool_env():
    """Environment for subprocesses: this interpreter's scripts (sciconv, snakemake) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    return env



# Wall seconds per file on 2 cores (pytest --durations, summed per file): an order hint only. A
# file missing here, or a stale number, changes which worker runs what, never what a test checks.
FILE_SECONDS = {"test_reliability.py": 320, "test_pipeline.py": 215, "test_lifecycle.py": 180,
                "test_device_script.py": 160, "test_reruns.py": 135, "test_planning.py": 132, "test_mri.py": 112,
                "test_recipe.py": 75, "test_lightcone.py": 65, "test_learning.py": 43, "test_mammography.py": 40,
                "test_layouts.py": 39, "test_browser.py": 37, "test_generic.py": 34, "test_batches.py": 29,
                "test_distributed.py": 26, "test_signals.py": 25}


def pytest_collection_modifyitems(config, items):
    """The longest files first: `--dist loadfile` hands files to the workers in collection order, and
    a long file handed out last keeps one worker busy after the other has finished (longest first is
    the classic remedy). The order inside a file is kept."""
    def file_of(item) -> str:
        return item.nodeid.split("::")[0]

    rank = {path: i for i, path in enumerate(dict.fromkeys(file_of(item) for item in items))}
    items.sort(key=lambda item: (-FILE_SECONDS.get(Path(file_of(item)).name, 0), rank[file_of(item)]))
