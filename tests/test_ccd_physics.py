"""The CCD simulator reproduces the physics it claims (numbers in sciconv/domains/ccd.py)."""

import numpy as np
import pytest
from scipy.stats import norm

from sciconv.config import schema_defaults
from sciconv.domains import ccd
from sciconv.domains import _ccd_physics as physics


def source(**overrides):
    src = schema_defaults(ccd.SCHEMAS["source"])
    src.update(overrides)
    return src


def quiet_source(**overrides):
    """No events and no defects: only what the test adds."""
    rates = {k: 0.0 for k in ("tritium", "xray", "muon", "electron", "alpha")}
    quiet = dict(events_per_frame=rates, n_hot_pixels=0, hot_column_e=0.0, dark_current_e=0.0, serial_register_hits=0.0)
    return source(**(quiet | overrides))


def electrons_of(adu, header):
    """The frame as ccd preprocessing sees it after the FITS reader: the exposed pixels, in electrons."""
    from sciconv.io.fits import crop_to_datasec

    data, meta = crop_to_datasec(adu, {k: v[0] for k, v in header.items()}, "frame.fits")
    return ccd.to_electrons(data, meta)


def test_readout_noise_and_gain_are_recovered_by_preprocessing():
    src = quiet_source(readout_noise_e=3.0, gain_adu_per_e=4.0, frame_size=[256, 256])
    rng = np.random.default_rng(1)
    adu, mask, header = ccd.simulate_frame(src, rng, ccd.sensor_defects(src, rng))
    electrons, noise = electrons_of(adu, header)
    assert not mask.any()
    # ADU are rounded: quantisation adds (1/gain)^2/12 in quadrature, negligible at gain 4.
    assert noise == pytest.approx(3.0, rel=0.05)
    assert electrons.std() == pytest.approx(3.0, rel=0.05)
    assert abs(np.median(electrons)) < 0.2  # each amplifier's pedestal removed


def test_pedestals_differ_per_amplifier_and_are_removed():
    src = quiet_source(n_amplifiers=2)
    rng = np.random.default_rng(2)
    defects = ccd.sensor_defects(src, rng)
    adu, _, header = ccd.simulate_frame(src, rng, defects)
    left, right = np.median(adu[:, :64]), np.median(adu[:, 64:128])
    assert abs(left - right) > 5  # two amplifiers, two pedestals
    electrons, _ = electrons_of(adu, header)
    assert abs(np.median(electrons[:, :64]) - np.median(electrons[:, 64:])) < 0.5


def test_deposited_charge_matches_energy_over_pair_energy():
    src = quiet_source(readout_noise_e=0.0)
    frame = physics._Frame(src, np.random.default_rng(3))
    frame.deposit(np.array([960.0]), np.array([960.0]), np.array([300.0]), np.array([1570]), ccd.OTHER_POINT)
    assert frame.charge.sum() == 1570  # every electron lands in the frame
    n = physics.ionisation_electrons(np.random.default_rng(4), np.full(20000, 5.9), fano=0.119)
    assert n.mean() == pytest.approx(5900 / 3.749, rel=1e-3)  # 3.749 eV per pair
    assert n.var() == pytest.approx(0.119 * 5900 / 3.749, rel=0.05)  # Fano-limited spread


@pytest.mark.parametrize("depth_um", [50.0, 350.0, 650.0])
def test_cluster_width_follows_the_diffusion_law(depth_um):
    src = quiet_source(readout_noise_e=0.0)
    frame = physics._Frame(src, np.random.default_rng(5))
    x = y = 64 * 15.0 + 7.5  # centre of a pixel
    frame.deposit(np.array([x]), np.array([y]), np.array([depth_um]), np.array([200_000]), ccd.TRITIUM)
    rows, cols = np.indices(frame.charge.shape)
    w = frame.charge / frame.charge.sum()
    var_px = (w * (cols - (w * cols).sum()) ** 2).sum()
    sigma_px = physics.diffusion_sigma_um(depth_um, src["diffusion_a_um2"], src["diffusion_b_per_um"]) / 15.0
    # the variance a Gaussian centred on a pixel keeps after binning into whole pixels
    k = np.arange(-20, 21)
    p = norm.cdf((k + 0.5) / sigma_px) - norm.cdf((k - 0.5) / sigma_px)
    assert var_px == pytest.approx((p * k**2).sum(), rel=0.05, abs=1e-3)


def test_deeper_interactions_make_wider_clusters():
    sigmas = physics.diffusion_sigma_um(np.array([10.0, 300.0, 675.0]), 285.0, 8.2e-4)
    assert np.all(np.diff(sigmas) > 0)
    assert 0.8 < sigmas[-1] / 15.0 < 1.5  # about a pixel at the back of a 675 um device


def test_tritium_spectrum_mean_and_endpoint():
    energies = physics.sample_beta_energies(np.random.default_rng(6), 200_000, 18.6)
    assert energies.mean() == pytest.approx(5.7, abs=0.15)
    assert energies.max() <= 18.6
    assert physics.electron_range_um(18.6) < 5.0  # far below a 15 um pixel: point-like


def test_muon_deposits_about_80_electrons_per_micrometre():
    src = quiet_source(readout_noise_e=0.0, frame_size=[512, 512])
    rng = np.random.default_rng(7)
    ratios = []
    for _ in range(20):
        frame = physics._Frame(src, rng)
        frame.add_muon()
        if frame.charge.sum() and (frame.label == ccd.TRACK).any():
            ratios.append(frame.charge.sum())
    # at least the vertical crossing: 675 um x 80 e-/um when the track stays in the frame
    assert np.median(ratios) >= 0.5 * 675 * 80


def test_labels_cover_every_event_class_and_only_charged_pixels():
    src = source(events_per_frame={"tritium": 5, "xray": 5, "muon": 1, "electron": 2, "alpha": 1})
    rng = np.random.default_rng(8)
    defects = ccd.sensor_defects(src, rng)
    seen = set()
    for _ in range(6):
        adu, mask, header = ccd.simulate_frame(src, rng, defects)
        electrons, _ = electrons_of(adu, header)
        seen |= set(np.unique(mask).tolist())
        labelled = mask > 0
        # labelled pixels got at least the labelling threshold (5 e-) of charge, up to noise
        assert np.median(electrons[labelled]) > 5.0
        assert labelled.mean() < 0.2  # events are sparse
    assert seen == {0, 1, 2, 3, 4}


def test_frames_are_deterministic_for_a_seed(tmp_path):
    src = source(n_frames=3, frame_size=[32, 32])
    rows_a = ccd.simulate(src, tmp_path / "a", seed=11)
    rows_b = ccd.simulate(src, tmp_path / "b", seed=11)
    assert rows_a == rows_b
    for row in rows_a:
        assert (tmp_path / "a" / row["image"]).read_bytes() == (tmp_path / "b" / row["image"]).read_bytes()


def test_each_amplifier_uses_its_own_gain():
    adu = np.zeros((4, 8))
    adu[:, :4], adu[:, 4:] = 100.0, 300.0
    adu[0, 0], adu[0, 4] = 120.0, 340.0  # 20 ADU over pedestal at gain 2 and 40 ADU at gain 4: 10 e- each
    meta = {"NAMPS": 2, "AMPSEC1": "[1:4,1:4]", "AMPSEC2": "[5:8,1:4]", "GAIN1": 2.0, "GAIN2": 4.0}
    electrons, _ = ccd.to_electrons(adu, meta)
    assert electrons[0, 0] == pytest.approx(10.0) and electrons[0, 4] == pytest.approx(10.0)
    assert np.median(electrons) == 0.0


def test_muon_zenith_angles_follow_cos_cubed_through_a_flat_sensor():
    """cos^2 per solid angle times the sensor's projected area: p(c) = 4c^3, mean 4/5, median 2^(-1/4)."""
    rng = np.random.default_rng(0)
    cosines = np.array([physics.muon_cos_zenith(rng) for _ in range(40000)])
    # the standard error of the mean is 0.163 / sqrt(40000) = 0.0008; U^(1/3) (cos^2 alone) would give 0.75
    assert abs(cosines.mean() - 0.8) < 0.004
    assert abs(np.median(cosines) - 2 ** -0.25) < 0.005


# --------------------------------------------------------------------------- detector effects
def test_the_overscan_follows_a_wandering_pedestal_that_the_frame_median_cannot():
    src = quiet_source(readout_noise_e=2.0, frame_size=[256, 128], pedestal_drift_adu=1.0)
    rng = np.random.default_rng(5)
    adu, _, header = ccd.simulate_frame(src, rng, ccd.sensor_defects(src, rng))
    assert adu.shape == (256, 128 + 2 * 16) and header["BIASSEC2"][0] == "[145:160,1:256]"
    electrons, _ = electrons_of(adu, header)
    assert electrons.shape == (256, 128)
    # by row: the overscan leaves the readout noise (plus its own median's error); the median leaves the walk
    with_overscan = electrons.mean(1).std()
    data, meta = adu[:, :128], {k: v[0] for k, v in header.items()}
    by_median, _ = ccd.to_electrons(data, meta)
    assert with_overscan < 0.5 and by_median.mean(1).std() > 3 * with_overscan


def test_charge_transfer_inefficiency_trails_away_from_the_amplifier():
    charge = np.zeros((64, 64))
    charge[50, 10] = charge[50, 53] = 10_000.0
    out = physics.transfer_inefficiency(charge, 1e-3, 2e-3, [(0, 32), (32, 64)])
    assert out.sum() == pytest.approx(charge.sum(), rel=1e-6)  # deferred, not lost (within the frame)
    # parallel: 51 transfers at 1e-3 leave about 5% of the packet in the rows above (read later)
    assert out[51:, 10].sum() / 10_000 == pytest.approx(1 - np.exp(-51e-3), rel=0.15)
    assert out[:50, 10].sum() == 0
    # serial: the left amplifier reads leftwards, so the trail runs right; the right one's runs left
    assert out[50, 11:16].sum() > 0 and out[50, 5:10].sum() == 0
    assert out[50, 48:53].sum() > 0 and out[50, 54:60].sum() == 0
    left_trail, right_trail = out[50, 11:16].sum() / 10_000, out[50, 48:53].sum() / 10_000
    assert left_trail == pytest.approx(11 * 2e-3, rel=0.3) and right_trail == pytest.approx(11 * 2e-3, rel=0.3)


def test_charge_over_the_full_well_bleeds_along_its_column():
    charge = np.zeros((40, 20))
    charge[20, 7] = 1_000_000.0
    label = np.zeros((40, 20), dtype=np.uint8)
    label[20, 7] = physics.ALPHA
    out = physics.bleed(charge, 100_000.0, label)
    assert out.max() <= 100_000.0 + 1e-6 and out.sum() == pytest.approx(1_000_000.0)
    assert np.count_nonzero(out[:, 7]) >= 10 and not out[:, [6, 8]].any()  # a vertical streak
    assert set(np.unique(label[out > 0])) == {physics.ALPHA}


def test_serial_register_hits_are_unlabelled_horizontal_streaks():
    src = quiet_source(serial_register_hits=3.0, readout_noise_e=0.0, overscan_columns=0, frame_size=[64, 64])
    rng = np.random.default_rng(9)
    adu, mask, header = ccd.simulate_frame(src, rng, ccd.sensor_defects(src, rng))
    electrons, _ = electrons_of(adu, header)
    hit = electrons > 200
    assert hit.any() and not mask.any()
    rows = np.unique(np.nonzero(hit)[0])
    assert all(hit[r].sum() >= 3 for r in rows)  # each streak lies along one row


# --------------------------------------------------------------------------- a sample on the sensor
def test_surface_decays_lose_charge_in_the_back_dead_layer():
    src = quiet_source(geometry="surface", dead_layer_um=0.5, partial_collection_um=2.0)
    frame = physics._Frame(src, np.random.default_rng(21))
    back = src["thickness_um"]
    assert frame.collection_efficiency([back, back - 0.5, back - 1.5, back - 2.5, 0.0]).tolist() == [0, 0, 0.5, 1, 1]
    # Stern et al. 1994's measured profile: 21 % at the surface, full behind a 0.23 um implant
    stern = physics._Frame(src | {"dead_layer_um": 0.0, "partial_collection_um": 0.23, "back_surface_collection": 0.21},
                           np.random.default_rng(21))
    np.testing.assert_allclose(stern.collection_efficiency([back, back - 0.115, back - 0.23, 0.0]),
                               [0.21, 0.605, 1.0, 1.0])
    # tritium betas (a few um of range) from the back face: a fraction of their charge is lost there;
    # with no dead layer and full collection they keep E / 3.749 eV (less the part that scatters back out)
    rng = np.random.default_rng(22)
    energies = physics.sample_beta_energies(rng, 300, 18.6)
    kept = {}
    for dead, partial in ((0.0, 0.0), (0.5, 2.0)):
        frame = physics._Frame(quiet_source(geometry="surface", dead_layer_um=dead, partial_collection_um=partial,
                                            frame_size=[64, 64]), np.random.default_rng(23))
        for energy in energies:
            frame.add_surface_electron(float(energy), physics.TRITIUM)
        kept[dead] = frame.charge.sum() / (energies.sum() * 1000 / physics.EV_PER_PAIR)
    # silicon backscatters 17% of them, taking 60% of their energy: about 0.9 kept, less what leaves the frame
    assert 0.75 < kept[0.0] <= 1.0 and kept[0.5] < 0.1  # tritium betas stop within a micron: mostly lost


def test_fallout_betas_are_labelled_and_their_spectra_have_the_tabulated_means():
    rng = np.random.default_rng(24)
    # NNDC mean energies: Cs-137 (514 keV branch) 174.3 keV, Y-90 932.3 keV; the allowed shape with the
    # non-relativistic Fermi function gives 162 (7% low at Z = 56) and 947
    assert physics.sample_beta_energies(rng, 100_000, 514.0, 56).mean() == pytest.approx(174.3, rel=0.09)
    assert physics.sample_beta_energies(rng, 100_000, 2280.1, 40).mean() == pytest.approx(932.3, rel=0.03)
    rates = {k: 0.0 for k in ("tritium", "xray", "muon", "electron", "alpha")} | {"cs137": 3.0, "sr90": 2.0}
    src = quiet_source(geometry="surface", events_per_frame=rates, overscan_columns=0)
    adu, mask, header = ccd.simulate_frame(src, rng, ccd.sensor_defects(src, rng))
    electrons, _ = electrons_of(adu, header)
    assert set(np.unique(mask)) == {0, physics.FALLOUT_BETA}
    assert np.median(electrons[mask == physics.FALLOUT_BETA]) > 5.0
    # the dataset's classes gain fallout_beta only with a sample on the sensor
    assert ccd.class_names_for({"source": {"geometry": "surface"}}, "segmentation")[-1] == "fallout_beta"
    assert ccd.class_names_for({"source": {"geometry": "bulk"}}, "segmentation") == ccd.CLASS_NAMES
