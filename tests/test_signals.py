"""The signals domain: the gamma-spectrum simulator's physics, MNIST-1D as its package builds it, the 1D
readers (FITS tables, CSV/TSV, HDF5, NumPy) and the errors a wrong signal meets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from astropy.io import fits

from sciconv import io
from sciconv.cli import main
from sciconv.domains import _gamma_physics as gp
from sciconv.domains.signals import SCHEMAS, peak_features, rebin, snip_background

DEFAULT_SOURCE = {k: v.get("default") for k, v in SCHEMAS["source"]["properties"].items()} | {"kind": "simulate"}


def centroid_and_fwhm(energies, counts, around, half_width):
    """The mean and the FWHM (2.3548 sigma) of the counts in a window."""
    window = (energies > around - half_width) & (energies < around + half_width)
    e, c = energies[window], counts[window]
    mean = (e * c).sum() / c.sum()
    return mean, 2.3548 * math.sqrt((c * (e - mean) ** 2).sum() / c.sum())


# --------------------------------------------------------------------------- physics of the spectra
def test_photopeaks_sit_at_the_line_energies_with_the_nai_resolution():
    detector = gp.Detector(DEFAULT_SOURCE | {"threshold_kev": 0.0})
    centres = detector.fine_centres
    for energy in (661.657, 1332.492, 122.061):
        peak_only = gp.interaction_probability(energy, detector.thickness_cm) * gp.peak_to_total(energy) * \
            gp._gaussian_bins(detector.fine, energy, gp.fwhm_kev(energy) / 2.3548)
        mean, fwhm = centroid_and_fwhm(centres, peak_only, energy, 3 * gp.fwhm_kev(energy))
        assert abs(mean - energy) < 0.5
        assert fwhm / energy == pytest.approx(0.07 * math.sqrt(661.657 / energy), rel=0.03)
    # 7% at 662 keV; the relative width falls as 1/sqrt(E)
    assert gp.fwhm_kev(661.657) / 661.657 == pytest.approx(0.07)
    assert (gp.fwhm_kev(1332.492) / 1332.492) / (gp.fwhm_kev(661.657) / 661.657) == pytest.approx(
        math.sqrt(661.657 / 1332.492))


def test_the_compton_edge_and_backscatter_peak_are_where_the_formulas_put_them():
    assert gp.compton_edge_kev(661.657) == pytest.approx(477.3, abs=0.1)  # Knoll: 477 keV for Cs-137
    assert gp.backscatter_kev(661.657) == pytest.approx(184.3, abs=0.1)
    assert gp.compton_edge_kev(1332.492) == pytest.approx(1118.1, abs=0.2)
    detector = gp.Detector(DEFAULT_SOURCE | {"threshold_kev": 0.0, "backscatter_fraction": 0.0})
    response = detector.line_response_uncached(661.657)
    centres = detector.fine_centres
    # the continuum's falling edge: where it drops through half its value on the shoulder below the edge
    shoulder = response[(centres > 380) & (centres < 440)].mean()
    beyond = (centres > 440) & (centres < 560)
    edge = centres[beyond][np.argmax(response[beyond] < shoulder / 2)]
    assert abs(edge - gp.compton_edge_kev(661.657)) < gp.fwhm_kev(477.3) / 2
    # between edge and photopeak the single-scatter continuum is nearly empty
    valley = response[(centres > 530) & (centres < 580)].mean()
    assert valley < 0.05 * shoulder
    # the peak-to-total share of the interactions: about half at 662 keV in a 3"x3" crystal
    peak = response[(centres > 600) & (centres < 720)].sum()
    assert peak / response.sum() == pytest.approx(gp.peak_to_total(661.657), rel=0.03)


def test_counts_are_poisson_and_the_gain_drift_moves_the_peaks(tmp_path):
    from sciconv.domains.signals import simulate

    src = DEFAULT_SOURCE | {"generator": "gamma_spectra", "n_samples": 120, "isotopes": ["Cs137"],
                            "background_only_fraction": 0.0, "activity_bq": [1000.0, 1000.0], "gain_drift": 0.0}
    rows = simulate(src, tmp_path, seed=3)
    spectra = np.stack([io.read(tmp_path / row["image"])[0][0] for row in rows])
    assert spectra.shape == (120, 1024) and np.all(spectra == np.round(spectra))
    mean = spectra.mean(0)
    busy = mean > 20
    # one expected spectrum drawn 120 times: variance = mean in every busy channel (Poisson), to ~25%
    ratio = spectra.var(0, ddof=1)[busy] / mean[busy]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.1) and np.all((ratio > 0.5) & (ratio < 1.6))
    with fits.open(tmp_path / rows[0]["image"]) as hdul:
        assert hdul["SPECTRUM"].header["HDUCLASS"] == "OGIP" and hdul["SPECTRUM"].header["EXPOSURE"] == 60.0
    # a gain 2% higher puts the Cs-137 photopeak 2% higher in channels
    kev = src["max_energy_kev"] / src["n_channels"]
    detector = gp.Detector(src)
    for gain in (1.0, 1.02):
        expected = gp.expected_spectrum(detector, "Cs137", 1000.0, 60.0, 0.0, gain, np.random.default_rng(0))
        channels = np.arange(1024) + 0.5
        mean_channel, _ = centroid_and_fwhm(channels, expected, 661.657 * gain / kev, 25)
        assert mean_channel * kev == pytest.approx(661.657 * gain, abs=1.0)


def test_the_peak_search_finds_the_library_lines_over_a_snip_background():
    src = DEFAULT_SOURCE | {"generator": "gamma_spectra"}
    detector = gp.Detector(src)
    rng = np.random.default_rng(0)
    counts = rng.poisson(gp.expected_spectrum(detector, "Co60", 2000.0, 60.0, 40.0, 1.0, rng)).astype(float)
    from scipy.ndimage import gaussian_filter1d

    background = snip_background(gaussian_filter1d(counts, 3.4), 15)
    channel_1332, channel_662 = int(1332.492 / (3000 / 1024)), int(661.657 / (3000 / 1024))
    # under the peak: the continuum, not the peak; away from peaks: the continuum itself, within 10%
    assert background[channel_1332] < 0.3 * counts[channel_1332 - 2: channel_1332 + 3].mean()
    assert background[channel_662] == pytest.approx(counts[channel_662 - 10: channel_662 + 10].mean(), rel=0.1)
    cfg = {"baseline": {"kev_per_bin": None, "isotopes": ["Cs137", "Co60"], "resolution_at_662": 0.07},
           "preprocess": {"normalize": "none", "scale": 1.0, "transform": "none"}}
    features = peak_features(counts, {"kev_per_bin": 3000 / 1024}, cfg)
    # [Cs137 line significance, Cs137 matched share, Co60 two lines, Co60 matched share, log10 counts]
    assert features[1] == 0.0 and features[4] == 1.0
    assert features[2] > 10 and features[3] > 10 and features[0] < 5


def test_rebinning_keeps_every_count_and_anscombe_stabilises_poisson_noise():
    rng = np.random.default_rng(1)
    counts = rng.poisson(50.0, size=(2, 1000)).astype(float)
    for length in (250, 333, 1000):
        assert rebin(counts, length, "sum").sum(1) == pytest.approx(counts.sum(1))
    assert rebin(counts, 250, "mean").mean() == pytest.approx(counts.mean())
    for rate in (5.0, 50.0, 500.0):  # Anscombe: unit variance at any rate above a few counts
        assert np.var(2 * np.sqrt(rng.poisson(rate, 100_000) + 3 / 8)) == pytest.approx(1.0, abs=0.08)


def test_the_stretch_augmentation_is_a_gain_drift_and_signals_are_never_flipped():
    from sciconv.augment import BatchAugment
    from sciconv.domains import get_domain

    signal = torch.zeros(1, 1, 200)
    signal[0, 0, 100] = 1.0
    augment = BatchAugment([{"kind": "stretch", "prob": 1.0, "factor": 0.1, "offset": 0.0}])
    out, _ = augment(signal, None, torch.Generator().manual_seed(0), torch.arange(1), 1)
    moved = float((out[0, 0] * torch.arange(200)).sum() / out[0, 0].sum())
    assert moved != pytest.approx(100.0, abs=0.5) and 100 * 0.9 - 1 <= moved <= 100 * 1.1 + 1
    assert out.sum() == pytest.approx(1.0, abs=0.15)  # a stretch resamples, it does not create counts
    specs = get_domain("signals").augment_specs({"gain": 0.02, "offset_bins": 2, "poisson": True, "noise_std": 0.1,
                                                  "prob": 0.5})
    assert {s["kind"] for s in specs} == {"stretch", "noise"} and get_domain("signals").mirror_axes({
        "gain": 0.02, "offset_bins": 2, "poisson": True, "noise_std": 0.1, "prob": 0.5}) == ()


# --------------------------------------------------------------------------- MNIST-1D
def test_mnist1d_is_the_package_set_at_its_default_arguments(tmp_path):
    from mnist1d.data import get_dataset_args, make_dataset

    from sciconv.domains.signals import simulate

    rows = simulate(DEFAULT_SOURCE, tmp_path, seed=42)
    reference = make_dataset(get_dataset_args())
    assert [r["subset"] for r in rows].count("train") == 4000 and [r["subset"] for r in rows].count("test") == 1000
    for row in (rows[0], rows[3999], rows[4000], rows[-1]):
        image, _, _, label, _ = io.read_row({**row, "image": str(tmp_path / row["image"])}, {}, signal=True)
        index, which = row["index"], ("x", "y") if row["subset"] == "train" else ("x_test", "y_test")
        assert image.shape == (1, 40)
        np.testing.assert_allclose(image[0], reference[which[0]][index], rtol=1e-6)
        assert row["label"] == reference[which[1]][index]
    assert np.bincount([r["label"] for r in rows], minlength=10).min() == 500


# --------------------------------------------------------------------------- readers
def test_one_dimensional_readers_agree(tmp_path):
    signal = np.arange(64, dtype=np.float64) ** 1.5
    two = np.stack([signal, signal[::-1]])
    np.save(tmp_path / "s.npy", signal)
    import h5py

    with h5py.File(tmp_path / "s.h5", "w") as handle:
        handle["image"] = signal
    (tmp_path / "s.csv").write_text("energy_kev,counts\n" + "".join(f"{i * 3},{v}\n" for i, v in enumerate(signal)))
    (tmp_path / "two.tsv").write_text("a\tb\n" + "".join(f"{a}\t{b}\n" for a, b in two.T))
    table = fits.BinTableHDU.from_columns([fits.Column("CHANNEL", "J", array=np.arange(64)),
                                           fits.Column("COUNTS", "D", array=signal),
                                           fits.Column("ERROR", "D", array=np.sqrt(signal))], name="SPECTRUM")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "s.pha")
    fits.PrimaryHDU(signal).writeto(tmp_path / "image1d.fits")
    for name in ("s.npy", "s.h5", "s.csv", "s.pha", "image1d.fits"):
        image, _ = io.read(tmp_path / name)
        assert image.shape == (1, 64), name
        np.testing.assert_allclose(image[0], signal)
    image, meta = io.read(tmp_path / "two.tsv")
    np.testing.assert_allclose(image, two)
    image, meta = io.read(tmp_path / "s.pha", options={"hdu": "SPECTRUM", "column": ["COUNTS", "ERROR"]})
    assert image.shape == (2, 64) and meta["table_columns"] == ["COUNTS", "ERROR"]
    # a (channels, length) array is a multi-channel signal for a signals dataset
    np.save(tmp_path / "two.npy", two)
    image, *_ = io.read_row({"image": str(tmp_path / "two.npy")}, {}, signal=True)
    assert image.shape == (2, 64)


def test_bad_signals_are_refused_naming_the_file_and_the_key(tmp_path):
    table = fits.BinTableHDU.from_columns([fits.Column("CHANNEL", "J", array=np.arange(16))], name="SPECTRUM")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "no_counts.pha")
    with pytest.raises(io.ReadError, match=r"no_counts.pha: .*none of COUNTS, RATE, FLUX; set source.column"):
        io.read(tmp_path / "no_counts.pha")
    with pytest.raises(io.ReadError, match=r"no column RATE \(source.column\); its columns: CHANNEL"):
        io.read(tmp_path / "no_counts.pha", options={"column": "RATE"})
    with pytest.raises(io.ReadError, match=r"source.hdu 'EVENTS': no HDU of that EXTNAME"):
        io.read(tmp_path / "no_counts.pha", options={"hdu": "EVENTS"})
    np.save(tmp_path / "image.npy", np.zeros((64, 64)))
    with pytest.raises(io.ReadError, match=r"image.npy: holds a 2D image of 64 x 64 .*takes 1D signals"):
        io.read_row({"image": str(tmp_path / "image.npy")}, {}, signal=True)
    with pytest.raises(io.ReadError, match=r"source.column name a part of a file, which .npy files do not have"):
        io.read(tmp_path / "image.npy", options={"column": "COUNTS"})
    (tmp_path / "s.csv").write_text("counts\n1\nx\n")
    with pytest.raises(io.ReadError, match=r"s.csv: line 3, column counts: 'x' is not a number"):
        io.read(tmp_path / "s.csv")


def signals_project(tmp_path, monkeypatch, files: dict, extra: dict | None = None, domain="signals"):
    """A files dataset of the given signals, one class folder each."""
    for name, values in files.items():
        target = tmp_path / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, values)
    (tmp_path / "config/datasets").mkdir(parents=True)
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["sig"], "device": "cpu"}))
    cfg = {"domain": domain, "task": "classification", "classes": ["a", "b"],
           "source": {"kind": "files", "layout": "folders", "path": "../../data"}, **(extra or {})}
    (tmp_path / "config/datasets/sig.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_signals_of_two_lengths_need_a_rebinning_size(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    files = {f"{c}/{c}{i}.npy": rng.normal(size=64 if i else 48) for c in "ab" for i in range(6)}
    signals_project(tmp_path, monkeypatch, files, {"split": {"val_fraction": 0.2, "test_fraction": 0.2}})
    assert main(["ingest", "sig"]) == 0 and main(["split", "sig"]) == 0
    assert main(["preprocess", "sig"]) == 2
    err = capsys.readouterr().err
    assert "key preprocess.length: signal" in err and "has 64 bins and" in err and "48" in err
    assert main(["preprocess", "sig", "--set", "preprocess.length=32"]) == 0


def test_nan_bins_and_wrong_dimensionality_are_named_at_ingest(tmp_path, monkeypatch, capsys):
    bad = np.ones(64)
    bad[17] = np.nan
    signals_project(tmp_path, monkeypatch, {"a/ok.npy": np.ones(64), "a/nan.npy": bad, "b/image.npy": np.ones((32, 32)),
                                            "b/ok.npy": np.zeros(64)})
    assert main(["ingest", "sig"]) == 2
    err = capsys.readouterr().err
    assert "nan.npy: image holds NaN or Inf values in 1 bin(s) of the signal, the first at bin 17" in err
    assert "image.npy: holds a 2D image of 32 x 32" in err


def test_a_signal_given_to_an_image_domain_is_refused(tmp_path, monkeypatch, capsys):
    signals_project(tmp_path, monkeypatch, {"a/s.npy": np.ones(64), "b/s2.npy": np.zeros(64)},
                    {"task": "classification"}, domain="generic")
    assert main(["ingest", "sig"]) == 2
    assert "a 1D signal of shape [64]; domain generic takes 2D or 3D images" in capsys.readouterr().err


def test_generated_signals_declare_the_generators_classes(tmp_path, monkeypatch, capsys):
    (tmp_path / "config/datasets").mkdir(parents=True)
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["g"]}))
    (tmp_path / "config/datasets/g.yaml").write_text(yaml.safe_dump(
        {"domain": "signals", "task": "classification", "classes": ["background", "Cs137"],
         "source": {"kind": "simulate", "generator": "gamma_spectra", "isotopes": ["Cs137", "Co60"]}}))
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "g"]) == 2
    assert "key classes: the gamma_spectra generator labels its signals background, Cs137, Co60" in \
        capsys.readouterr().err
    (tmp_path / "config/datasets/g.yaml").write_text(yaml.safe_dump(
        {"domain": "signals", "task": "classification", "classes": [str(d) for d in range(10)],
         "source": {"kind": "simulate"}, "evaluate": {"tta": "mirror"}}))
    assert main(["simulate", "g"]) == 2
    assert "key evaluate.tta: mirror needs an axis the signals domain's augmentation flips" in capsys.readouterr().err


def test_inspect_prints_the_1d_conv_arithmetic(tmp_path, monkeypatch, capsys):
    from conftest import REPO

    (tmp_path / "config/datasets").mkdir(parents=True)
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump({"datasets": ["gamma_demo"]}))
    for name in ("gamma_demo", "mnist1d_demo"):
        (tmp_path / f"config/datasets/{name}.yaml").write_text((REPO / f"config/datasets/{name}.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "gamma_demo"]) == 0
    out = capsys.readouterr().out
    assert "net.layer_0.conv" in out and "Conv1d" in out and "[1, 16, 128]" in out  # 256 bins, stride 2
    assert "input size: exactly [256]" in out
    # MNIST-1D's length is the data's: known once preprocessed
    assert main(["inspect", "mnist1d_demo"]) == 2
    assert "key preprocess.length: sciconv inspect needs the signals' length" in capsys.readouterr().err
