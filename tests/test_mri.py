"""Brain MRI: the simulator's physics, NIfTI geometry round trips, resampling, BraTS regions, HD95 in mm."""

import json
import subprocess

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, shrunk_mri_config

from sciconv import io
from sciconv.config import ConfigError, load_dataset, load_global, schema_defaults
from sciconv.domains import mri
from sciconv.metrics import dice, hd95_mm, mean_over_cases, region_metrics
from sciconv.tasks import task_for


def stored_classes(mask, cfg):
    return task_for(cfg["task"]).stored_mask(mask, cfg)


def source(**overrides) -> dict:
    return schema_defaults(mri.SCHEMAS["source"]) | {"voxel_sizes_mm": [[3, 3, 3]]} | overrides


@pytest.fixture(scope="module")
def subject():
    """One simulated subject with a tumour on a 2 x 2 x 4 mm grid: (image, labels, RAS affine, attrs)."""
    return mri.simulate_subject(np.random.default_rng(11), source(voxel_sizes_mm=[[2, 2, 4]]), has_tumour=True)


def test_contrasts_follow_the_signal_equations():
    s = {c: {t: mri.signal(t, c) for t in mri.TISSUES} for c in mri.CONTRASTS}
    assert s["t1"]["wm"] > s["t1"]["gm"] > s["t1"]["csf"]  # T1-weighted: white matter brightest
    assert s["t2"]["csf"] > s["t2"]["gm"] > s["t2"]["wm"]  # T2-weighted: fluid brightest
    assert s["flair"]["csf"] < 0.3 * s["flair"]["wm"]  # FLAIR nulls CSF ...
    assert s["flair"]["edema"] > 1.5 * s["flair"]["gm"]  # ... so edema is the brightest thing in it
    # gadolinium lights up the enhancing rim on T1Gd only; the necrotic core takes none up
    assert s["t1gd"]["enhancing"] > 1.8 * s["t1"]["enhancing"]
    assert s["t1gd"]["necrotic"] == s["t1"]["necrotic"] < s["t1gd"]["wm"]


def test_rician_noise_is_rayleigh_where_there_is_no_signal():
    rng = np.random.default_rng(0)
    background = mri.rician(rng, np.zeros(200_000), sigma=2.0)
    assert background.mean() == pytest.approx(2.0 * np.sqrt(np.pi / 2), rel=0.01)
    bright = mri.rician(rng, np.full(200_000, 100.0), sigma=2.0)  # high SNR: nearly Gaussian around the signal
    assert bright.mean() == pytest.approx(100.0, rel=0.001) and bright.std() == pytest.approx(2.0, rel=0.02)
    field = mri.bias_field(rng, (20, 24, 22), 0.8, 1.2)
    assert field.min() == pytest.approx(0.8) and field.max() == pytest.approx(1.2)


def test_subject_has_brats_labels_and_anatomy(subject):
    image, labels, affine, attrs = subject
    assert image.shape[0] == 4 and image.shape[1:] == labels.shape
    assert np.allclose(np.diag(affine)[:3], [2, 2, 4])
    assert set(np.unique(labels)) <= {0, 1, 2, 4} and {2, 4} <= set(np.unique(labels))
    flair = image[mri.CONTRASTS.index("flair")]
    assert flair[labels == 2].mean() > 1.5 * flair[(labels == 0) & (flair > flair.mean())].mean()
    # two subjects are different brains: deformation and scaling per subject
    other, *_ = mri.simulate_subject(np.random.default_rng(12), source(voxel_sizes_mm=[[2, 2, 4]]), False)
    assert other.shape == image.shape and np.corrcoef(other[0].ravel(), image[0].ravel())[0, 1] < 0.95


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "PIR"])
def test_nifti_round_trip_keeps_affine_and_orientation(tmp_path, subject, orientation):
    image, labels, affine, _ = subject
    mri.write_nifti(tmp_path / "s.nii.gz", image, affine, orientation, is_label=False, contrasts=list(mri.CONTRASTS))
    mri.write_nifti(tmp_path / "s_seg.nii.gz", labels, affine, orientation, is_label=True)
    stored = nib.load(tmp_path / "s.nii.gz")
    assert "".join(nib.aff2axcodes(stored.affine)) == orientation
    read, meta = io.read(tmp_path / "s.nii.gz")
    assert meta["orientation"] == "RAS" and meta["original_orientation"] == orientation
    assert np.allclose(meta["affine"], affine, atol=1e-4)  # back on the RAS grid it was simulated on
    assert read.shape == image.shape
    assert np.abs(read - image).max() <= stored.dataobj.slope * 0.51  # int16 quantisation only
    assert np.array_equal(io.read_mask(tmp_path / "s_seg.nii.gz"), labels)
    assert mri.channel_names(meta, 4) == list(mri.CONTRASTS)


def test_preprocessing_resamples_to_the_target_spacing_and_keeps_tumour_volume(tmp_path, subject):
    image, labels, affine, attrs = subject
    mri.write_nifti(tmp_path / "s.nii.gz", image, affine, "LPS", is_label=False, contrasts=list(mri.CONTRASTS))
    read, meta = io.read(tmp_path / "s.nii.gz")
    params = schema_defaults(mri.SCHEMAS["preprocess"]) | {"spacing_mm": [3.0, 3.0, 3.0]}
    volume, mask, grid = mri.preprocess(read, meta, params, mask=labels.astype(np.int64))
    assert grid["spacing"] == pytest.approx([3.0, 3.0, 3.0])
    assert volume.shape[1:] == mask.shape and volume.shape[0] == 4
    # the head crop fits the brain (about 140 x 175 x 135 mm) at 3 mm
    assert 40 <= volume.shape[1] <= 62 and 50 <= volume.shape[2] <= 72 and 40 <= volume.shape[3] <= 60
    tumour_ml = lambda m, voxel_ml: (m > 0).sum() * voxel_ml  # noqa: E731
    assert tumour_ml(mask, 0.027) == pytest.approx(tumour_ml(labels, 0.016), rel=0.15)
    inside = volume[0] != 0
    assert volume[0][inside].mean() == pytest.approx(0, abs=1e-3) and volume[0][inside].std() == pytest.approx(1, rel=1e-2)
    # the grid's affine maps a voxel of the tumour to the same world point as in the source
    source_centre = affine @ np.append(np.argwhere(labels > 0).mean(0), 1)
    grid_centre = np.asarray(grid["affine"]) @ np.append(np.argwhere(mask > 0).mean(0), 1)
    assert np.linalg.norm(source_centre[:3] - grid_centre[:3]) < 3.0


def test_predicted_mask_lands_on_the_source_grid(tmp_path, subject):
    image, labels, affine, _ = subject
    mri.write_nifti(tmp_path / "s.nii.gz", image, affine, "PIR", is_label=False, contrasts=list(mri.CONTRASTS))
    mri.write_nifti(tmp_path / "s_seg.nii.gz", labels, affine, "PIR", is_label=True)
    read, meta = io.read(tmp_path / "s.nii.gz")
    classes, reason = stored_classes(io.read_mask(tmp_path / "s_seg.nii.gz"), {"task": "segmentation",
                                                                                 "mask_values": [0, 1, 2, 4]})
    assert reason is None and set(np.unique(classes)) <= {0, 1, 2, 3}
    params = schema_defaults(mri.SCHEMAS["preprocess"]) | {"spacing_mm": [3.0, 3.0, 3.0]}
    _, on_grid, grid = mri.preprocess(read, meta, params, mask=classes)
    from sciconv.io.nifti import write_mask_on_source

    # a perfect prediction on the preprocessed grid, written back: the source file's affine and axes, BraTS values
    out = write_mask_on_source(on_grid, grid["affine"], tmp_path / "s.nii.gz", tmp_path / "pred.nii.gz", [0, 1, 2, 4])
    written, source_file = nib.load(out), nib.load(tmp_path / "s_seg.nii.gz")
    assert np.allclose(written.affine, source_file.affine) and written.shape == source_file.shape
    back, truth = np.asarray(written.dataobj), np.asarray(source_file.dataobj)
    assert set(np.unique(back)) <= {0, 1, 2, 4}
    assert dice(back > 0, truth > 0) > 0.85  # only the 3 mm round trip's partial voxels differ


def test_mask_values_map_brats_labels_and_reject_strays():
    cfg = {"task": "segmentation", "mask_values": [0, 1, 2, 4]}
    mapped, reason = stored_classes(np.array([[0, 1], [2, 4]]), cfg)
    assert reason is None and mapped.tolist() == [[0, 1], [2, 3]]
    _, reason = stored_classes(np.array([[0, 3]]), cfg)
    assert reason == "mask holds values [3] that are not in mask_values [0, 1, 2, 4]"
    # for an image-level label the mask is an outline: any label is the object
    outline, _ = stored_classes(np.array([[0, 4, 2]]), {"task": "classification"})
    assert outline.tolist() == [[0, 1, 1]]


def test_hd95_is_in_millimetres_on_anisotropic_voxels():
    truth = np.zeros((30, 30, 30), bool)
    truth[10:20, 10:20, 10:20] = True
    shifted_z = np.roll(truth, 2, axis=2)
    shifted_x = np.roll(truth, 2, axis=0)
    spacing = (1.0, 1.0, 3.0)
    assert hd95_mm(shifted_z, truth, spacing) == pytest.approx(6.0)  # 2 slices of 3 mm
    assert hd95_mm(shifted_x, truth, spacing) == pytest.approx(2.0)  # 2 voxels of 1 mm
    assert hd95_mm(np.zeros_like(truth), np.zeros_like(truth), spacing) == 0.0
    assert hd95_mm(np.zeros_like(truth), truth, spacing) == pytest.approx(np.linalg.norm([30, 30, 90]))


def test_brats_regions_nest_the_classes():
    truth = np.zeros((10, 10, 10), int)
    truth[2:8, 2:8, 2:8] = 2  # edema
    truth[3:7, 3:7, 3:7] = 3  # enhancing
    truth[4:6, 4:6, 4:6] = 1  # necrotic core
    regions = {"wt": [1, 2, 3], "tc": [1, 3], "et": [3]}
    perfect = region_metrics(truth, truth, regions, spacing=(1, 1, 1))
    assert perfect == {"dice_wt": 1.0, "hd95_wt": 0.0, "dice_tc": 1.0, "hd95_tc": 0.0, "dice_et": 1.0, "hd95_et": 0.0}
    all_edema = np.where(truth > 0, 2, 0)  # whole tumour right, nothing of the core
    scores = region_metrics(all_edema, truth, regions)
    assert scores["dice_wt"] == 1.0 and scores["dice_tc"] == 0.0 and scores["dice_et"] == 0.0
    summary = mean_over_cases([perfect, scores | {"hd95_wt": 0.0, "hd95_tc": 9.0, "hd95_et": 9.0}], regions)
    assert summary["dice_tc"] == 0.5 and summary["dice_mean"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_sliding_window_inference_covers_the_whole_volume():
    from monai.networks.nets import UNet

    from sciconv.inference import segment, segment_logits

    net = UNet(3, 4, 4, channels=(4, 8, 16), strides=(2, 2), num_res_units=0).eval()
    volume = torch.randn(1, 4, 50, 61, 47)  # not a multiple of the patch nor of the downsampling
    logits = segment_logits(net, volume, [32, 32, 32], torch.device("cpu"), amp=False)
    assert tuple(logits.shape) == (1, 4, 50, 61, 47)
    assert segment(net, volume[0].numpy(), [32, 32, 32], torch.device("cpu"), amp=False).shape == (50, 61, 47)


def test_demo_configs_are_valid_and_region_mistakes_are_named(tmp_path):
    global_cfg = load_global(REPO / "config/config.yaml")
    seg = load_dataset(str(REPO / "config/datasets/mri_seg_demo.yaml"), global_cfg)
    assert seg.class_names == ["background", "necrotic_core", "edema", "enhancing"]
    assert seg.cfg["mask_values"] == [0, 1, 2, 4] and set(seg.cfg["regions"]) == {"wt", "tc", "et"}
    assert seg.cfg["train"]["patch_sampling"] == "pos_neg"
    cls = load_dataset(str(REPO / "config/datasets/mri_cls_demo.yaml"), global_cfg)
    assert cls.class_names == ["no_tumour", "tumour"]
    for key, value, message in (("mask_values", [0, 1, 2], "key mask_values: 3 values for 4 classes"),
                                ("regions", {"tc": ["necrotic_core", "enhancing_tumor"]},
                                 "key regions.tc: enhancing_tumor not among the foreground classes")):
        raw = yaml.safe_load((REPO / "config/datasets/mri_seg_demo.yaml").read_text()) | {key: value}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=message):
            load_dataset(str(path), global_cfg)


@pytest.mark.e2e
def test_mri_demos_run_through_the_workflow(project, tool_env):
    """Both shrunk MRI demos through the real Snakemake workflow: metrics, montages and NIfTI masks in MLflow."""
    config = yaml.safe_load((project / "config/config.yaml").read_text())
    (project / "config/config.yaml").write_text(yaml.safe_dump(config | {"datasets": ["mri_seg_micro", "mri_cls_micro"]}))
    (project / "config/datasets/mri_seg_micro.yaml").write_text(yaml.safe_dump(shrunk_mri_config("segmentation")))
    (project / "config/datasets/mri_cls_micro.yaml").write_text(yaml.safe_dump(shrunk_mri_config("classification")))
    run = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(project), "--cores", "2"],
                         capture_output=True, text=True, env=tool_env, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    seg = project / "results/mri_seg_micro"
    metrics = json.loads((seg / "metrics.json").read_text())
    assert {"dice_wt", "dice_tc", "dice_et", "dice_mean", "hd95_wt", "hd95_tc", "hd95_et", "baseline_dice_wt",
            "n_test", "mlflow_run_id"} <= set(metrics)
    assert all(0 <= metrics[f"dice_{r}"] <= 1 for r in ("wt", "tc", "et")) and metrics["hd95_wt"] >= 0
    masks = sorted((seg / "predicted_masks").glob("*_pred.nii.gz"))
    assert len(masks) == metrics["n_test"]
    for mask in masks:  # each on its own source file's grid
        source = nib.load(seg / "raw" / mask.name.replace("_pred", ""))
        assert np.allclose(nib.load(mask).affine, source.affine) and nib.load(mask).shape == source.shape[:3]
    per_case = (seg / "per_sample_metrics.csv").read_text().splitlines()
    assert per_case[0].startswith("id,") and "dice_wt" in per_case[0] and len(per_case) == metrics["n_test"] + 1

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project}/results/mlflow.db")
    run_id = metrics["mlflow_run_id"]
    assert len(client.list_artifacts(run_id, "predicted_masks")) == metrics["n_test"]
    assert [a.path for a in client.list_artifacts(run_id, "saliency")]  # the 3D montages
    assert "evaluation/per_sample_metrics.csv" in {a.path for a in client.list_artifacts(run_id, "evaluation")}

    # predict on a raw file: the mask comes back on that file's grid, with BraTS values
    source = sorted((seg / "raw").glob("subject_*[0-9].nii.gz"))[0]
    predicted = subprocess.run(["sciconv", "predict", "--model", str(seg / "model"), str(source), "--out",
                                str(project / "predictions")], capture_output=True, text=True, env=tool_env,
                               cwd=project, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    (mask,) = (project / "predictions").glob("*_mask.nii.gz")
    assert np.allclose(nib.load(mask).affine, nib.load(source).affine) and nib.load(mask).shape == nib.load(source).shape[:3]
    assert set(np.unique(np.asarray(nib.load(mask).dataobj))) <= {0, 1, 2, 4}

    cls = json.loads((project / "results/mri_cls_micro/metrics.json").read_text())
    assert {"auroc", "baseline_auroc", "sensitivity", "specificity", "saliency_hit_rate", "n_test"} <= set(cls)
    assert list((project / "results/mri_cls_micro/saliency").glob("*.png"))


def test_mprage_gives_gradient_echo_t1_contrast():
    """MPRAGE (ADNI's 3 T protocol, Bloch recursion): white matter brightest and CSF darkest as in a
    spin echo, with a stronger grey-white contrast, and gadolinium still lighting up the rim."""
    s = {c: {t: mri.signal(t, c, "mprage") for t in mri.TISSUES} for c in ("t1", "t1gd")}
    assert s["t1"]["wm"] > s["t1"]["gm"] > s["t1"]["necrotic"] > s["t1"]["csf"]
    spin_echo = mri.signal("wm", "t1") / mri.signal("gm", "t1")
    assert s["t1"]["wm"] / s["t1"]["gm"] > 1.3 > spin_echo  # MPRAGE's grey-white contrast, 1.3-1.6 in practice
    assert s["t1gd"]["enhancing"] > 2 * s["t1"]["enhancing"] and s["t1gd"]["necrotic"] == s["t1"]["necrotic"]
    # CSF's long T1 keeps it near the null at TI: far darker than in a spin echo
    assert s["t1"]["csf"] / s["t1"]["wm"] < 0.3 < mri.signal("csf", "t1") / mri.signal("wm", "t1")
    from sciconv.domains._mr_physics import mprage_centre_mz

    with pytest.raises(ValueError, match="readout train does not fit"):
        mprage_centre_mz(1000.0, {**mri.MPRAGE, "ti_ms": 300.0})


def test_reconstructed_noise_is_correlated_between_neighbours_with_its_sd_kept():
    rng = np.random.default_rng(3)
    clean = np.zeros((48, 48, 48))
    white, filtered = mri.rician(rng, clean + 100.0, 2.0), mri.rician(rng, clean + 100.0, 2.0, correlated=True)
    for noise, expected in ((white - 100.0, 0.0), (filtered - 100.0, 0.39)):
        assert noise.std() == pytest.approx(2.0, rel=0.03)
        neighbours = np.corrcoef(noise[:-1].ravel(), noise[1:].ravel())[0, 1]
        assert neighbours == pytest.approx(expected, abs=0.05)
