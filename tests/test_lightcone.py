"""21cm light-cones: the simulator's physics, the HDF5 files, LOS-respecting augmentation, regression."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO

from sciconv import io
from sciconv.config import load_dataset, load_global, schema_defaults
from sciconv.domains import lightcone as lc
from sciconv.tasks.regression import r2_rmse


def source(**overrides) -> dict:
    return schema_defaults(lc.SCHEMAS["source"]) | {"sky_cells": 16, "n_coeval": 6} | overrides


def test_cosmology_numbers():
    assert lc.sigma_r(8.0 / lc.H)[0] == pytest.approx(lc.SIGMA_8, rel=1e-3)
    # linear growth in matter domination: D proportional to 1 / (1 + z), suppressed ~0.78 today by Lambda
    assert lc.growth_factor(9.0) / lc.growth_factor(19.0) == pytest.approx(2.0, rel=0.01)
    # the comoving distance to z = 6 is about 8.3 Gpc for this cosmology (Planck-like)
    assert lc.comoving_distance(6.0)[0] == pytest.approx(8400, rel=0.03)


def test_neutral_fraction_falls_with_time_and_faster_for_larger_zeta():
    histories = {}
    for zeta in (15.0, 45.0):
        _, attrs = lc.simulate_lightcone(np.random.default_rng(4), source(), {"zeta": zeta, "log10_tvir": 4.7,
                                                                              "r_max": 15.0})
        histories[zeta] = np.array(attrs["neutral_fraction"])  # ordered by increasing redshift
    for history in histories.values():
        assert np.all(np.diff(history) >= -1e-9), "x_HI must grow with redshift (fall as time goes on)"
    assert np.all(histories[45.0] <= histories[15.0] + 1e-9) and histories[45.0].mean() < histories[15.0].mean() - 0.1


def test_neutral_mean_density_brightness_matches_the_formula():
    # z = 9, Planck-like: 27 mK x (0.0225 / 0.023) x sqrt(0.15 / 0.1425 x 10 / 10) = 27.1 mK
    omega_b_h2, omega_m_h2 = lc.OMEGA_B * lc.H**2, lc.OMEGA_M * lc.H**2
    expected = 27 * (omega_b_h2 / 0.023) * np.sqrt(0.15 / omega_m_h2 * 1.0)
    assert lc.brightness_temperature(np.ones(1), np.zeros(1), 9.0)[0] == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(27.1, abs=0.3)
    # a light-cone that never ionises (tiny zeta): each slice's mean is the formula at its redshift
    cone, attrs = lc.simulate_lightcone(np.random.default_rng(1), source(), {"zeta": 1e-6, "log10_tvir": 5.3,
                                                                             "r_max": 5.0})
    z = np.array(attrs["redshifts"])
    formula = lc.brightness_temperature(np.ones_like(z), np.zeros_like(z), z)
    np.testing.assert_allclose(cone.mean(axis=(0, 1)), formula, rtol=0.1)
    assert abs(cone.mean() / formula.mean() - 1) < 0.02


def test_density_power_spectrum_matches_its_input():
    shape, cell = (48, 48, 48), 8.0
    delta = lc.gaussian_density(np.random.default_rng(2), shape, cell)
    power = np.abs(np.fft.rfftn(delta)) ** 2 * cell**3 / np.prod(shape)
    k = lc.wavenumbers(shape, cell)
    edges = np.geomspace(0.05, 0.35, 6)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (k >= lo) & (k < hi)
        measured, model = power[inside].mean(), lc.linear_power(k[inside]).mean()
        assert measured / model == pytest.approx(1.0, abs=0.2), (lo, hi)


def test_hdf5_round_trip_keeps_the_cone_and_its_attributes(tmp_path):
    rows = lc.simulate(source(n_samples=2), tmp_path, seed=5)
    assert [r["image"] for r in rows] == ["lightcone_00000.h5", "lightcone_00001.h5"]
    image, meta = io.read(tmp_path / rows[0]["image"])
    import h5py

    with h5py.File(tmp_path / rows[0]["image"]) as f:
        np.testing.assert_array_equal(image[0], f["lightcone"][()])
    assert image.ndim == 4 and image.shape[1:3] == (16, 16)
    assert len(json.loads(meta["redshifts"])) == image.shape[3]
    assert json.loads(rows[0]["target"])["zeta"] == pytest.approx(meta["zeta"])
    assert meta["axes"] == "x, y, line of sight" and meta["box_length_mpc"] == 160.0


@pytest.mark.parametrize("executor", ["batched", "monai"])
def test_augmentation_never_touches_the_line_of_sight(executor):
    from monai.transforms import Compose

    from sciconv.augment import BatchAugment, monai_transforms

    params = schema_defaults(lc.SCHEMAS["augment"]) | {"prob": 1.0}
    specs = lc.augment_specs(params)
    assert {s["kind"] for s in specs} == {"flip", "rot90", "roll"}
    transforms = Compose(monai_transforms(specs, keys=("image",)))
    transforms.set_random_state(seed=0)
    batched, generator = BatchAugment(specs), torch.Generator().manual_seed(0)
    cone = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 8, 8, 20)).astype(np.float32))
    cone[..., 5] += 10.0  # a marked slice
    profile = cone.sum(dim=(0, 1, 2))
    changed_sky = False
    for _ in range(20):
        if executor == "monai":
            out = torch.as_tensor(transforms({"image": cone.clone()})["image"])
        else:
            out = batched(cone[None].clone(), None, generator, torch.arange(1), 1)[0][0]
        assert out.shape == cone.shape
        # every LOS slice keeps its content (a permutation of its pixels) and its place
        torch.testing.assert_close(out.sum(dim=(0, 1, 2)), profile, rtol=1e-5, atol=1e-4)
        for s in (0, 5, 19):
            torch.testing.assert_close(torch.sort(out[..., s].flatten())[0], torch.sort(cone[..., s].flatten())[0])
        changed_sky |= not torch.equal(out, cone)
    assert changed_sky, "the sky transforms never did anything"


def test_r2_and_rmse():
    truth = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    perfect = r2_rmse(truth, truth, ["a", "b"])
    assert perfect["r2_a"] == 1.0 and perfect["rmse_b"] == 0.0 and perfect["r2_mean"] == 1.0
    mean_only = r2_rmse(np.full_like(truth, truth.mean(0)), truth, ["a", "b"])
    assert mean_only["r2_a"] == pytest.approx(0.0) and mean_only["rmse_a"] == pytest.approx(np.sqrt(2 / 3))


@pytest.mark.parametrize("name", ["lightcone_demo", "lightcone_cls_demo"])
def test_shrunk_demo_trains_and_evaluates(tmp_path, monkeypatch, name):
    from sciconv.steps import evaluate, explain, ingest, plan, preprocess, simulate, split, train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = yaml.safe_load((REPO / f"config/datasets/{name}.yaml").read_text())
    cfg["source"].update(n_samples=16, sky_cells=16, n_coeval=4, n_filter_scales=4, z_min=6.5, z_max=9.0)
    cfg["train"].update(epochs=2, batch_size=4)
    (tmp_path / "config/datasets").mkdir(parents=True)
    (tmp_path / f"config/datasets/{name}.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump({"datasets": [name], "device": "cpu", "seed": 3}))
    ds = load_dataset(name, load_global("config/config.yaml"))
    for step in (simulate, ingest, split, preprocess, plan):
        step.run(ds)
    train.run(ds, threads=1)
    metrics = evaluate.run(ds)
    if ds.cfg["task"] == "regression":
        expected = {f"{p}_{t}" for p in ("r2", "rmse", "baseline_r2") for t in lc.TARGETS}
        assert expected | {"r2_mean", "baseline_r2_mean", "n_test", "mlflow_run_id"} <= set(metrics)
        assert (tmp_path / f"results/{name}/plots/predicted_vs_true.png").is_file()
        checkpoint = torch.load(tmp_path / f"results/{name}/model/model.pt", weights_only=True)
        assert checkpoint["target_names"] == lc.TARGETS and len(checkpoint["target_std"]) == 3
        from sciconv.steps import predict

        files = sorted(str(p) for p in (tmp_path / f"results/{name}/raw").glob("*.h5"))[:3]
        table = predict.run(str(tmp_path / f"results/{name}/model"), files, str(tmp_path / "pred"), device="cpu")
        lines = table.read_text().splitlines()
        assert lines[0] == "file,zeta,log10_tvir,r_max" and len(lines) == 4
        zeta = [float(line.split(",")[1]) for line in lines[1:]]
        assert all(0 < z < 200 for z in zeta)  # physical units (the prior is 10-60), not standardised
    else:
        assert {"auroc", "baseline_auroc", "n_test_positive"} <= set(metrics)
    explain.run(ds)
    assert list((tmp_path / f"results/{name}/saliency").glob("*.png"))


def test_a_21cmfast_light_cone_goes_through_ingest(tmp_path, monkeypatch):
    """The field's own simulator as the generator: same HDF5 layout, read by the same ingest."""
    pytest.importorskip("py21cmfast", reason="the cosmo extra (21cmFAST) is not installed")
    from sciconv.steps import ingest, simulate
    from sciconv.store import StoreReader

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = yaml.safe_load((REPO / "config/datasets/lightcone_21cmfast_demo.yaml").read_text())
    cfg["source"].update(n_samples=3, sky_cells=16, cell_mpc=10.0, z_min=7.0, z_max=8.5)
    (tmp_path / "config/datasets").mkdir(parents=True)
    (tmp_path / "config/datasets/c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["c"], "device": "cpu", "seed": 2}))
    ds = load_dataset("c", load_global("config/config.yaml"))
    simulate.run(ds)
    ingest.run(ds)
    with StoreReader(tmp_path / "results/c/ingested.h5") as store:
        sample = store.sample(store.ids[0])
    assert sample.image.shape[:3] == (1, 16, 16) and sample.image.shape[3] > 10
    assert np.isfinite(sample.image).all() and sample.image.max() > 0
    assert sample.attrs["meta"]["generator"].startswith("21cmfast")
    assert json.loads(sample.attrs["target"])["zeta"] == pytest.approx(sample.attrs["meta"]["zeta"])


def test_x_ray_heating_in_21cmfast_cones_follows_l_x():
    """With spin-temperature fluctuations the gas absorbs (dTb < 0) until X-rays heat it: a faint
    X-ray population (L_X 10^38) leaves the cone in absorption at z 11-12, a bright one (10^42) has
    heated it into emission by then."""
    pytest.importorskip("py21cmfast", reason="the cosmo extra (21cmFAST) is not installed")
    from sciconv.config import schema_defaults

    src = schema_defaults(lc.SCHEMAS["source"]) | {"generator": "21cmfast", "spin_temperature": True,
                                                    "sky_cells": 8, "z_min": 10.0, "z_max": 12.0}
    base = {"zeta": 30.0, "log10_tvir": 4.7, "r_max": 15.0, "e0_ev": 500.0}
    mean = {}
    for lx in (38.0, 42.0):
        cone, attrs = lc.simulate_21cmfast(3, src, base | {"log10_lx": lx}, Path(tempfile.mkdtemp()))
        high = np.asarray(attrs["redshifts"]) > 11.0
        mean[lx] = float(cone[:, :, high].mean())
        assert attrs["log10_lx"] == lx
    assert mean[38.0] < 0 < mean[42.0]


def test_heating_parameters_need_the_21cmfast_generator_and_spin_temperature(tmp_path):
    from sciconv.config import ConfigError

    cfg = yaml.safe_load((REPO / "config/datasets/lightcone_demo.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"datasets": ["d"]}))
    for source, targets, key in (({"spin_temperature": True}, cfg["targets"], "source.spin_temperature"),
                                 ({"generator": "21cmfast"}, [*cfg["targets"], "log10_lx"], "targets.*spin_temperature")):
        (tmp_path / "d.yaml").write_text(yaml.safe_dump({**cfg, "source": {**cfg["source"], **source},
                                                         "targets": targets}))
        with pytest.raises(ConfigError, match=key):
            load_dataset(str(tmp_path / "d.yaml"), load_global(tmp_path / "config.yaml"))


def test_sheth_tormen_normalisation():
    # all mass is in halos of some mass: both collapsed fractions are 1 at nu -> 0
    assert lc.sheth_tormen_boost(1e-6) == pytest.approx(1.0, abs=0.01)
    # rare peaks are more abundant under Sheth-Tormen, increasingly so
    boosts = [lc.sheth_tormen_boost(nu) for nu in (2.0, 3.0, 4.0)]
    assert 1.0 < boosts[0] < boosts[1] < boosts[2]


def test_the_foreground_wedge_is_removed_and_nothing_else():
    """Inside the horizon wedge (and its buffer) no power is left; outside it every mode is untouched."""
    from sciconv.domains._interferometer import observe
    from sciconv.domains.lightcone import wedge_slope

    assert float(wedge_slope(8.0)) == pytest.approx(3.45, abs=0.05)  # about 3.5 at z = 8 (Pober et al. 2014)
    assert float(wedge_slope(6.0)) < float(wedge_slope(8.0)) < float(wedge_slope(12.0))
    rng = np.random.default_rng(0)
    cone = rng.normal(size=(16, 16, 32))
    z = np.linspace(7.0, 8.0, 32)
    filtered = observe(cone, z, 10.0, rng, wedge_buffer_per_mpc=0.1)
    for start in (0, 16):
        part, before = np.fft.fftn(filtered[:, :, start:start + 16]), np.fft.fftn(cone[:, :, start:start + 16])
        k = [2 * np.pi * np.fft.fftfreq(16, d=10.0)] * 3
        k_perp = np.hypot(k[0][:, None, None], k[1][None, :, None])
        inside = np.abs(k[2])[None, None, :] <= float(wedge_slope(z[start:start + 16].mean())) * k_perp + 0.1
        assert inside.any() and (~inside).any()
        assert np.abs(part[inside]).max() < 1e-9 and np.allclose(part[~inside], before[~inside])
    assert abs(filtered.mean()) < 1e-9  # k = 0 lies inside the wedge's buffer: each chunk's mean is gone
