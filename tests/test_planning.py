"""The planner: fingerprint statistics, nnU-Net's spacing rule, precedence yaml > plan > default, the
built-in configs untouched by planning, and the plan-time errors that stop a run before training."""

from __future__ import annotations

import glob
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, shrunk_ccd_config, shrunk_mri_config

from sciconv import fingerprint, planning
from sciconv.config import load_dataset, load_global
from sciconv.planning import PlanError


def test_running_moments_match_numpy_over_uneven_chunks():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(5, 3, n) for n in (1, 7, 1000, 33)]
    moments = fingerprint.RunningMoments()
    for chunk in chunks:
        moments.add(chunk)
    joined = np.concatenate(chunks)
    assert moments.mean == pytest.approx(joined.mean(), rel=1e-12)
    assert moments.std == pytest.approx(joined.std(), rel=1e-10)


def test_reservoir_keeps_a_bounded_uniform_sample():
    reservoir = fingerprint.Reservoir(100, np.random.default_rng(0))
    reservoir.extend(range(100_000))
    assert len(reservoir.items) == 100 and reservoir.seen == 100_000
    assert 30_000 < np.mean(reservoir.items) < 70_000  # a uniform draw, not the first hundred


def test_target_spacing_is_the_median_and_nnunets_rule_for_an_anisotropic_axis():
    value, reason = planning.target_spacing([[1, 1, 1], [1, 1, 1.2], [2, 2, 2]])
    assert value == [1, 1, 1.2] and "median" in reason
    # thick slices in most scans: the out-of-plane axis takes its 10th percentile, not the median
    spacings = [[0.5, 0.5, 5.0]] * 8 + [[0.5, 0.5, 1.0]] * 2
    value, reason = planning.target_spacing(spacings)
    assert value[:2] == [0.5, 0.5] and value[2] == pytest.approx(np.percentile([5.0] * 8 + [1.0] * 2, 10))
    assert "anisotropy" in reason


@pytest.fixture
def micro(tmp_path, monkeypatch):
    """A micro CCD project through ingest, split and preprocess (real steps, real files)."""
    (tmp_path / "config/datasets").mkdir(parents=True)
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["ccd_micro"], "seed": 7, "device": "cpu"}))
    cfg = shrunk_ccd_config(n_frames=12)
    cfg["source"]["events_per_frame"]["alpha"] = 1.0  # every class in 12 frames, whatever the draws
    (tmp_path / "config/datasets/ccd_micro.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from sciconv.cli import main

    for step in ("simulate", "ingest", "split", "preprocess"):
        assert main([step, "ccd_micro"]) == 0
    return tmp_path


def test_the_fingerprint_counts_train_and_val_classes_and_leaves_the_test_set_out(micro):
    from sciconv.cli import main
    from sciconv.store import StoreReader

    assert main(["plan", "ccd_micro"]) == 0
    split = json.loads(Path("results/ccd_micro/split.json").read_text())
    found = json.loads(Path("results/ccd_micro/fingerprint.json").read_text())
    with StoreReader("results/ccd_micro/ingested.h5") as store:
        seen = [store.sample(i).mask for i in split["train"] + split["val"]]
        images = np.stack([store.sample(i).image for i in split["train"] + split["val"]])
    counts = np.bincount(np.concatenate([m.ravel() for m in seen]), minlength=5)
    assert [c["voxels"] for c in found["classes"].values()] == counts.tolist()
    assert found["n_samples"] == len(split["train"]) + len(split["val"])
    inside = np.concatenate([im[0][m > 0] for im, m in zip(images, seen)])
    assert found["intensity"][0]["mean"] == pytest.approx(float(inside.mean()), rel=1e-6)
    assert found["classes"]["tritium"]["objects"] >= found["classes"]["tritium"]["samples_with"] > 0
    # the micro config writes every planned key: the plan sets none of them
    assert json.loads(Path("results/ccd_micro/plan.json").read_text())["settings"] == {}


def test_precedence_yaml_beats_plan_beats_default_and_inspect_says_which(micro, capsys):
    from sciconv.cli import main

    cfg = yaml.safe_load(Path("config/datasets/ccd_micro.yaml").read_text())
    del cfg["train"]["batch_size"], cfg["train"]["epochs"], cfg["train"]["class_sampling_ratios"]
    cfg["train"]["time_budget_min"] = 0.2
    Path("config/datasets/ccd_micro.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["plan", "ccd_micro"]) == 0
    plan = json.loads(Path("results/ccd_micro/plan.json").read_text())
    assert {"train.batch_size", "train.epochs", "train.class_sampling_ratios"} <= set(plan["settings"])
    assert "train.patch_size" not in plan["settings"]  # written in the YAML: the plan keeps it
    assert plan["measured"]["input"] == cfg["train"]["patch_size"] and plan["measured"]["step_s"] > 0
    ds = planning.with_plan(load_dataset("ccd_micro", load_global()))
    assert ds.cfg["train"]["epochs"] == plan["settings"]["train.epochs"]["value"] >= 1
    assert ds.cfg["train"]["patch_size"] == cfg["train"]["patch_size"]
    capsys.readouterr()
    assert main(["inspect", "ccd_micro"]) == 0
    rows = {line.split()[0]: line.split()[2] for line in capsys.readouterr().out.splitlines()
            if line.startswith("  ") and len(line.split()) > 2}
    assert rows["train.epochs"] == "plan" and rows["train.patch_size"] == "yaml"
    assert rows["train.learning_rate"] == "yaml" and rows["train.weight_decay"] == "default"


CONFIGS = sorted(p for p in glob.glob(str(REPO / "config/datasets/*.yaml")) if not p.endswith("_planned.yaml"))


def synthetic_context(ds, shapes, fingerprint_: dict | None = None, device="cpu"):
    names = ds.class_names
    fp = fingerprint_ or {"labels": {n: 10 for n in names},
                          "classes": {n: {"voxels": 100, "voxel_fraction": 1 / len(names)} for n in names}}
    return planning.Context(ds, fp, np.asarray(shapes), 1, 20, 5, torch.device(device), planning.Plan())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: Path(p).stem)
def test_planning_leaves_every_built_in_config_as_written(path):
    """Their YAMLs write every key the plan would set, so their numbers cannot move."""
    ds = load_dataset(path, load_global(REPO / "config/config.yaml"))
    ctx = synthetic_context(ds, [[64] * (3 if ds.cfg["domain"] in ("mri", "lightcone") else 2)] * 20)
    ds.task.plan(ctx)
    assert ctx.plan.settings == {}
    assert planning.apply(ds, ctx.plan.to_json()).cfg == ds.cfg


def planned_ccd(tmp_path, **train):
    cfg = shrunk_ccd_config()
    cfg.pop("model")
    cfg["train"] = train
    path = tmp_path / "ccd_planned_micro.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_dataset(str(path), load_global(REPO / "config/config.yaml"))


def test_a_planned_segmenter_fits_the_network_to_its_patch(tmp_path):
    ds = planned_ccd(tmp_path, time_budget_min=2)
    ctx = synthetic_context(ds, [[128, 128]] * 20)
    ds.task.plan(ctx)
    settings = {k: d.value for k, d in ctx.plan.settings.items()}
    factor = int(np.prod(settings["model.strides"]))
    assert all(s % factor == 0 and s // factor >= 4 for s in settings["train.patch_size"])
    assert len(settings["model.channels"]) == len(settings["model.strides"]) + 1
    assert settings["train.batch_size"] % ds.cfg["train"]["patches_per_image"] == 0
    assert settings["train.epochs"] >= 1 and settings["train.loss"] == "dice_ce"


def test_epochs_the_yaml_writes_shrink_the_planned_patch_to_fit_the_budget(tmp_path, monkeypatch):
    # Step time proportional to the voxels a step computes: the shrinking logic under test, not this
    # machine's momentary load (a contended CI runner timed 128 and 96 pixel patches alike).
    def compute_bound(model_args, spatial, batch, device, amp, steps=3):
        return planning.Probe(2e-7 * batch * float(np.prod(spatial)), planning.formula_bytes(model_args, spatial),
                              "proportional to voxels (test)")

    monkeypatch.setattr(planning, "probe", compute_bound)

    def planned(epochs):
        ds = planned_ccd(tmp_path, epochs=epochs, time_budget_min=2)
        ctx = synthetic_context(ds, [[128, 128]] * 20)
        ds.task.plan(ctx)
        return ctx.plan

    roomy, demanding = planned(1), planned(100_000)
    assert "train.epochs" not in roomy.settings and "train.epochs" not in demanding.settings
    assert "shrunk" not in roomy.settings["train.patch_size"].reason
    assert np.prod(demanding.settings["train.patch_size"].value) < np.prod(roomy.settings["train.patch_size"].value)
    assert "shrunk" in demanding.settings["train.patch_size"].reason


def test_rare_classes_are_centred_on_more_often(tmp_path):
    ds = planned_ccd(tmp_path)
    shares = [0.96, 0.03, 0.008, 0.001, 0.001]
    ctx = synthetic_context(ds, [[64, 64]] * 20, {"classes": {n: {"voxels": 1, "voxel_fraction": f} for n, f in
                                                              zip(ds.class_names, shares)}})
    from sciconv.tasks.segmentation_plan import plan_sampling

    plan_sampling(ctx, ctx.fingerprint["classes"])
    ratios = ctx.plan.settings["train.class_sampling_ratios"].value
    assert ratios[0] == 1.0 and sum(ratios[1:]) == pytest.approx(2.0, abs=0.01)
    assert ratios[1] < ratios[2] < ratios[3] == ratios[4]


def test_plan_time_errors_say_what_to_change(tmp_path):
    ds = planned_ccd(tmp_path)
    fp = {"classes": {n: {"voxels": 0 if n == "alpha" else 5, "voxel_fraction": 0.2} for n in ds.class_names}}
    with pytest.raises(PlanError, match="alpha has no voxels.*leave it out of classes"):
        ds.task.plan(synthetic_context(ds, [[64, 64]] * 20, fp))
    with pytest.raises(PlanError, match="median shape is \\[6.0, 6.0\\].*resize them in preprocess"):
        ds.task.plan(synthetic_context(ds, [[6, 6]] * 20))
    with pytest.raises(PlanError, match="time_budget_min: 0.0001 min is less than one epoch.*raise it to at least"):
        tiny = planned_ccd(tmp_path, time_budget_min=0.0001)
        tiny.task.plan(synthetic_context(tiny, [[64, 64]] * 20))
    with pytest.raises(PlanError, match="over the memory budget.*train.memory_budget_gib"):
        starved = planned_ccd(tmp_path, memory_budget_gib=1e-6)
        starved.task.plan(synthetic_context(starved, [[64, 64]] * 20))


def test_a_dataset_too_small_to_train_stops_at_plan_time(micro, capsys):
    from sciconv.cli import main

    split_path = Path("results/ccd_micro/split.json")
    split = json.loads(split_path.read_text())
    split["train"], split["val"] = split["train"][:1], []
    split_path.write_text(json.dumps(split))
    assert main(["plan", "ccd_micro"]) == 2
    assert "at least 2 and 1" in capsys.readouterr().err
    assert not Path("results/ccd_micro/plan.json").exists()


@pytest.mark.e2e
def test_an_unseen_3d_dataset_read_as_generic_trains_from_a_short_yaml(tmp_path, tool_env):
    """MRI simulator files read as `domain: generic`: the planner has never seen them in any config.
    Spacing, normalisation, network, batch, sampling and loss come from the plan; epochs and patch are
    written, as the time-budget plan of both depends on the machine's speed and this test must not."""
    (tmp_path / "config/datasets").mkdir(parents=True)
    source = shrunk_mri_config("segmentation", n_subjects=12)
    source["source"]["voxel_sizes_mm"] = [[4, 4, 4], [3, 3, 5]]
    (tmp_path / "config/datasets/mri_files.yaml").write_text(yaml.safe_dump(source))
    yaml_text = ("domain: generic\ntask: segmentation\nclasses: [background, necrotic_core, edema, enhancing]\n"
                 "mask_values: [0, 1, 2, 4]\nregions: {wt: [necrotic_core, edema, enhancing]}\n"
                 f"source: {{kind: files, layout: manifest, manifest: {tmp_path}/results/mri_files/raw/manifest.csv}}\n"
                 "train: {epochs: 12, patch_size: [24, 24, 24]}\n")
    assert len(yaml_text.splitlines()) < 10
    (tmp_path / "config/datasets/brain.yaml").write_text(yaml_text)
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["brain"], "seed": 3, "device": "cpu"}))
    for command in (["simulate", "mri_files"], ["run", "brain"]):
        done = subprocess.run(["sciconv", *command], cwd=tmp_path, env=tool_env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads((tmp_path / "results/brain/plan.json").read_text())
    assert {"preprocess.spacing_mm", "model.channels", "model.strides", "train.batch_size",
            "train.class_sampling_ratios"} <= set(plan["settings"])
    metrics = json.loads((tmp_path / "results/brain/metrics.json").read_text())
    # useful: far above the classical threshold on the same scans
    assert metrics["dice_wt"] > 0.3 and metrics["dice_wt"] > 3 * metrics["baseline_dice_wt"], metrics
