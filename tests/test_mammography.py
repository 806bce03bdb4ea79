"""Mammography: the DICOM the simulator writes, preprocessing, grouped splits, and the classification machinery."""

import json

import numpy as np
import pydicom
import pytest
import torch
import yaml
from conftest import REPO

from sciconv import data, io
from sciconv.config import load_dataset, load_global
from sciconv.domains import mammography as mg
from sciconv.domains import _mammo_physics as physics
from sciconv.domains import _mammo_xray as xray
from sciconv.metrics import choose_threshold, classification_metrics
from sciconv.tasks.classification import build_loss

META = {"patient_id": "P1", "laterality": "L", "view": "CC", "thickness_mm": 50.0, "pixel_spacing_mm": 0.3,
        "bits_stored": 14}


@pytest.mark.parametrize("monochrome1", [False, True])
@pytest.mark.parametrize("rescale", [(1.0, 0.0), (0.5, -100.0)])
def test_dicom_round_trip_gives_the_written_values(tmp_path, monochrome1, rescale):
    attenuation = np.random.default_rng(0).uniform(0.5, 3.0, (40, 32))
    attenuation[:, :4] = 0.0  # air beside the breast
    path = tmp_path / "img.dcm"
    mg.write_dicom(path, attenuation, META | {"rescale": rescale, "monochrome1": monochrome1})

    image, meta = io.read(path)
    expected = physics.presentation_values(attenuation)
    # the only loss is the rounding of stored integers: half a stored step in modality units
    assert image.shape == (1, 40, 32)
    np.testing.assert_allclose(image[0], expected, atol=rescale[0] / 2 + 1e-6)

    raw = pydicom.dcmread(path)
    assert raw.Modality == "MG" and raw.SOPClassUID == physics.MG_FOR_PRESENTATION
    assert raw.PhotometricInterpretation == ("MONOCHROME1" if monochrome1 else "MONOCHROME2")
    assert raw.BitsStored == 14 and float(raw.RescaleSlope) == rescale[0]
    stored = raw.pixel_array.astype(float)
    # MONOCHROME1 stores bright as low: the densest pixel has the smallest stored value
    densest = np.unravel_index(np.argmax(attenuation), attenuation.shape)
    assert (stored[densest] == stored.min()) == monochrome1
    assert meta["ImageLaterality"] == "L" and meta["ViewPosition"] == "CC" and meta["PixelSpacing"] == [0.3, 0.3]
    assert meta["converted_to"] == "MONOCHROME2"


def tiny_source(**overrides) -> dict:
    cfg = load_dataset(str(REPO / "config/datasets/mammo_demo.yaml"), load_global(REPO / "config/config.yaml"))
    return cfg.cfg["source"] | {"n_patients": 3, "image_size": [96, 80], "prevalence": 0.2} | overrides


def test_simulator_writes_four_views_per_patient_with_masks_for_lesions(tmp_path):
    rows = mg.simulate(tiny_source(), tmp_path, seed=3)
    assert len(rows) == 12
    by_patient = {}
    for row in rows:
        by_patient.setdefault(row["group"], []).append(row)
        image, meta = io.read(tmp_path / row["image"])
        assert meta["ImageLaterality"] == row["laterality"] and meta["ViewPosition"] == row["view"]
        if row["label"]:
            mask = io.read_mask(tmp_path / row["mask"])
            assert mask.shape == image.shape[1:] and mask.any()
        else:
            assert row["mask"] == ""
    for views in by_patient.values():
        assert sorted((r["laterality"], r["view"]) for r in views) == [("L", "CC"), ("L", "MLO"), ("R", "CC"),
                                                                         ("R", "MLO")]
        positive_sides = {r["laterality"] for r in views if r["label"]}
        assert len(positive_sides) <= 1  # one breast has the lesion, seen in both its views
        assert sum(r["label"] for r in views) in (0, 2)
    assert {r["group"] for r in rows if r["label"]}, "prevalence 0.2 of 3 patients gives at least one"


def test_power_law_texture_has_the_configured_exponent():
    rng = np.random.default_rng(1)
    field = physics.power_law_field(rng, (256, 256), beta=3.0)
    spectrum = np.abs(np.fft.fft2(field)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij"))
    band = (f > 0.02) & (f < 0.3)
    slope = np.polyfit(np.log(f[band]), np.log(spectrum[band]), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.15)
    gland = physics.glandular_fraction(field, density=0.3)
    assert gland.mean() == pytest.approx(0.3, abs=0.03) and 0 <= gland.min() and gland.max() <= 1


def test_path_length_falls_to_zero_at_the_skin_line():
    d = np.array([-1.0, 0.0, 5.0, 25.0, 100.0])
    t = physics.path_length_cm(d, thickness_cm=5.0)
    assert t[0] == 0 and t[1] == 0 and 0 < t[2] < 5.0 and t[3] == pytest.approx(5.0) and t[4] == 5.0


def test_preprocessing_standardises_laterality_and_photometry_and_moves_the_mask(tmp_path):
    src = tiny_source(n_patients=1, prevalence=0.5, mass_fraction=1.0)
    attenuation, mask, _ = mg.simulate_view(np.random.default_rng(5), src, "CC",
                                            {"thickness_cm": 5.0, "density": 0.3, "beta": 3.0}, "mass")
    params = {"window": "voi", "crop_to_breast": True, "size": [64, 48], "normalize": "zscore"}
    outputs = {}
    for side, monochrome1 in (("L", False), ("R", True)):
        image = attenuation[:, ::-1] if side == "R" else attenuation  # a right breast: chest wall on the right
        lesion = mask[:, ::-1] if side == "R" else mask
        path = tmp_path / f"{side}.dcm"
        mg.write_dicom(path, image, META | {"laterality": side, "rescale": (1.0, 0.0), "monochrome1": monochrome1})
        pixels, meta = io.read(path)
        outputs[side] = mg.preprocess(pixels, meta, params, mask=lesion.astype(np.int64))
    (left, left_mask, _), (right, right_mask, _) = outputs["L"], outputs["R"]
    assert left.shape == (1, 64, 48) and left_mask.shape == (64, 48)
    # the same breast, once MONOCHROME2 on the left and once MONOCHROME1 on the right, comes out the same
    np.testing.assert_allclose(left, right, atol=1e-3)
    np.testing.assert_array_equal(left_mask, right_mask)
    assert left_mask.any()
    # the chest wall is at column 0: the breast touches the left edge, not the right one
    assert (left[0, :, 0] > left.min()).mean() > 0.5 and (left[0, :, -1] > left.min()).mean() < 0.5
    # the mask lands on the lesion: brighter there than in the breast around it
    assert left[0][left_mask > 0].mean() > np.median(left[0][left[0] > left.min()])


def test_baseline_scores_a_speck_cluster_above_its_background():
    rng = np.random.default_rng(2)
    smooth = np.pad(rng.normal(0, 0.05, (60, 60)), 2, constant_values=-3)
    specks = smooth.copy()
    for y, x in ((30, 30), (33, 28), (27, 34), (31, 36)):
        specks[y, x] += 2.0
    cfg = {"baseline": {"calcification_sigmas_px": [0.7, 1.5], "mass_sigmas_px": [2.5, 6.0]}}
    assert mg.baseline(specks[None], {}, cfg).score > mg.baseline(smooth[None], {}, cfg).score + 3


def test_threshold_youden_and_target_sensitivity():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # Youden: 0.7 gives sensitivity 3/4, specificity 1 (J = 0.75), better than any other cut
    assert choose_threshold(scores, labels) == pytest.approx(0.7)
    # every positive caught needs the cut at 0.4, the lowest positive score
    assert choose_threshold(scores, labels, target_sensitivity=1.0) == pytest.approx(0.4)
    assert choose_threshold(scores, np.zeros(8, int)) == 0.5  # nothing to choose from


def test_classification_metrics_at_the_threshold():
    labels = np.array([0, 0, 0, 1, 1])
    positive = np.array([0.1, 0.6, 0.2, 0.7, 0.4])
    probabilities = np.stack([1 - positive, positive], 1)
    m = classification_metrics(probabilities, labels, threshold=0.5)
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == pytest.approx(2 / 3)
    assert m["auroc"] == pytest.approx(5 / 6) and m["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert np.isnan(classification_metrics(probabilities[:3], labels[:3])["auroc"])  # one class: undefined


def test_each_imbalance_strategy_weighs_the_rare_class():
    labels = [0] * 18 + [1] * 2
    assert data.inverse_frequency_weights(labels, 2) == pytest.approx([20 / 36, 20 / 4])
    logits = torch.zeros(4, 2)
    logits[:, 0] = 2.0  # confident "normal" for everything
    target = torch.tensor([0, 0, 0, 1])
    plain = build_loss("none", labels, 2, 2.0)(logits, target).item()
    weighted = build_loss("weighted_ce", labels, 2, 2.0)(logits, target).item()
    focal = build_loss("focal", labels, 2, 2.0)(logits, target).item()
    # missing the rare positive costs more when it is weighted; focal loss shrinks the easy negatives' share
    assert weighted > plain and 0 < focal < plain
    from sciconv.batches import epoch_plan

    weights = data.inverse_frequency_weights(labels, 2)[np.asarray(labels)]
    generator = torch.Generator().manual_seed(0)
    epochs = [np.array(labels)[torch.cat(epoch_plan(len(labels), 8, generator, weights)).numpy()] for _ in range(50)]
    # an epoch is as long as the data, but draws the 10%-class about half the time
    assert all(len(e) == 20 for e in epochs) and np.concatenate(epochs).mean() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("strategy", ["none", "balanced_sampler", "weighted_ce", "focal"])
def test_training_runs_with_each_imbalance_strategy(tmp_path, monkeypatch, strategy):
    """Every strategy trains through the real steps, saves a threshold and evaluates with every metric key."""
    from sciconv.steps import evaluate, ingest, plan, preprocess, simulate, split, train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = yaml.safe_load((REPO / "config/datasets/mammo_demo.yaml").read_text())
    cfg["source"].update(n_patients=8, image_size=[96, 80], prevalence=0.25)
    cfg["preprocess"]["size"] = [48, 40]
    cfg["train"].update(epochs=2, batch_size=8, imbalance=strategy, patch_size=[32, 32])
    cfg["model"].update(init_features=8, growth_rate=4, block_config=[2, 2])
    cfg["explain"]["n_samples"] = 1
    (tmp_path / "config/datasets").mkdir(parents=True)
    (tmp_path / "config/datasets/m.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["m"], "device": "cpu", "seed": 1}))
    ds = load_dataset("m", load_global("config/config.yaml"))
    for step in (simulate, ingest, split, preprocess, plan):
        step.run(ds)
        if step is split:
            sets = json.loads((tmp_path / "results/m/split.json").read_text())
            patient = {i: i.split("_")[0] for name in ("train", "val", "test") for i in sets[name]}
            owners = {}
            for name in ("train", "val", "test"):
                for i in sets[name]:
                    owners.setdefault(patient[i], set()).add(name)
            assert all(len(s) == 1 for s in owners.values()), "a patient's views were split across sets"
    train.run(ds, threads=1)
    checkpoint = torch.load(tmp_path / "results/m/model/model.pt", weights_only=True)
    assert 0.0 <= checkpoint["threshold"] <= 1.0
    metrics = evaluate.run(ds)
    assert {"auroc", "pr_auc", "balanced_accuracy", "sensitivity", "specificity", "threshold", "n_test",
            "n_test_positive", "baseline_auroc", "saliency_hit_rate", "mlflow_run_id"} <= set(metrics)
    assert metrics["threshold"] == pytest.approx(checkpoint["threshold"])
    assert (tmp_path / "results/m/plots/confusion_matrix.png").is_file()
    if strategy == "focal":  # once is enough: predict on the raw DICOM files, by registry URI
        from sciconv.steps import predict

        files = [str(p) for p in sorted((tmp_path / "results/m/raw").glob("*.dcm"))]
        table = predict.run("models:/sciconv-m/latest", files, str(tmp_path / "pred"),
                            device="cpu", tracking_uri="sqlite:///results/mlflow.db")
        lines = table.read_text().splitlines()
        assert lines[0] == "file,p_normal,p_lesion,threshold,prediction"
        assert len(lines) == 1 + 32 and all(line.endswith((",normal", ",lesion")) for line in lines[1:])

        # transfer learning from the registered model, head frozen for the first epoch
        transfer = dict(cfg, init_from="models:/sciconv-m/latest")
        transfer["train"] = dict(cfg["train"], epochs=1, freeze_encoder_epochs=1, learning_rate=0.05)
        (tmp_path / "config/datasets/t.yaml").write_text(yaml.safe_dump(transfer))
        target = load_dataset("t", load_global("config/config.yaml"))
        for step in (simulate, ingest, split, preprocess, plan):
            step.run(target)
        train.run(target, threads=1)
        source_state = checkpoint["model_state"]
        tuned = torch.load(tmp_path / "results/t/model/model.pt", weights_only=True)["model_state"]
        encoder = [k for k in source_state if not k.startswith("class_layers.out") and "running" not in k
                   and "num_batches" not in k]
        # frozen: every encoder weight is the source model's; the head moved
        assert all(torch.equal(source_state[k], tuned[k]) for k in encoder)
        assert not torch.equal(source_state["class_layers.out.weight"], tuned["class_layers.out.weight"])


def test_own_dicom_folders_are_grouped_by_patient_id(tmp_path, monkeypatch):
    """A user's folder per class of DICOM files, no manifest: PatientID becomes the split group."""
    from sciconv.steps import ingest
    from sciconv.store import StoreReader

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for label in ("normal", "lesion"):
        (tmp_path / "dicoms" / label).mkdir(parents=True)
        for patient in ("A", "B"):
            image = rng.uniform(0.5, 3.0, (32, 24))
            mg.write_dicom(tmp_path / "dicoms" / label / f"{patient}.dcm", image,
                           META | {"patient_id": f"{patient}{label}", "rescale": (1.0, 0.0), "monochrome1": False})
    (tmp_path / "config/datasets").mkdir(parents=True)
    (tmp_path / "config/datasets/own.yaml").write_text(yaml.safe_dump({
        "domain": "mammography", "task": "classification",
        "source": {"kind": "files", "layout": "folders", "path": "../../dicoms", "format": "dicom"}}))
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["own"], "device": "cpu"}))
    ingest.run(load_dataset("own", load_global("config/config.yaml")))
    with StoreReader(tmp_path / "results/own/ingested.h5") as store:
        groups = {store.sample_attrs(i)["group"]: store.sample_attrs(i)["label"] for i in store.ids}
    assert groups == {"Anormal": 0, "Bnormal": 0, "Alesion": 1, "Blesion": 1}


def test_quantum_noise_follows_the_detector_dose():
    """5.8e6 photons per mm^2 per mGy at 20 keV (the issue's figure, from air's mu_en/rho), so 50 uGy gives
    2.9e5 per mm^2; the log image's noise falls as 1/sqrt(fluence)."""
    from sciconv.config import schema_defaults

    assert xray.fluence_per_air_kerma(20.0) == pytest.approx(5.79e6, rel=0.01)
    src = schema_defaults(mg.SCHEMAS["source"]) | {"image_size": [96, 80], "equalisation": 0.0,
                                                   "electronic_noise_ugy": 0.0}
    assert physics.detector_fluence_per_mm2(src) == pytest.approx(2.9e5, rel=0.01)
    patient = {"thickness_cm": 4.5, "density": 0.3, "beta": 3.1}

    def view(quanta):
        image, _, _ = physics.simulate_view(np.random.default_rng(4), src | {"detector_quanta_per_mm2": quanta},
                                            "CC", patient, None)
        return image

    clean = view(1e12)
    breast = clean != 0
    noise = {q: (view(q) - clean)[breast].std() for q in (2.5e4, 1e5)}
    assert noise[2.5e4] / noise[1e5] == pytest.approx(2.0, rel=0.05)
    # a log signal's noise is 1/sqrt(counts): at 1e5 per mm^2 and 0.6 mm pixels, 3.6e4 counts behind the breast
    assert noise[1e5] == pytest.approx(1 / np.sqrt(1e5 * src["pixel_spacing_mm"] ** 2), rel=0.35)
