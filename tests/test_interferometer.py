"""A named interferometer's thermal noise in the light-cone (docs/science.md, 21cm light-cones)."""

import numpy as np
import pytest

from sciconv.domains import _interferometer as interferometer


def k_perp_grid(n: int, cell: float) -> np.ndarray:
    k = 2 * np.pi * np.fft.fftfreq(n, d=cell)
    return np.hypot(k[:, None, None], k[None, :, None]) * np.ones((1, 1, n))


def test_volume_factor_agrees_with_21cmsense():
    """X^2 Y from this package's cosmology against 21cmSense's (Planck15) at every tabulated frequency."""
    for night in interferometer.table()["telescopes"]["SKA-Low"]["nights"]:
        z = interferometer.NU_21_MHZ / night["frequency_mhz"] - 1
        assert interferometer.x2y(z) == pytest.approx(night["x2y_mpc3_per_sr_mhz"], rel=0.02)


def test_system_temperature_is_receiver_plus_sky():
    """T_sys = 100 K + 260 K (nu / 150 MHz)^-2.6 (Mozdzen et al. 2017, 21cmSense's default sky)."""
    for night in interferometer.table()["telescopes"]["HERA"]["nights"]:
        assert night["tsys_k"] == pytest.approx(100 + 260 * (night["frequency_mhz"] / 150) ** -2.6, rel=1e-6)


@pytest.mark.parametrize("telescope", ["SKA-Low", "HERA"])
def test_noise_field_has_the_stated_power_and_falls_with_observing_time(telescope):
    """A noise-only cone's power per mode, averaged over modes of similar k_perp, is P_N; 4x the hours
    halves the noise; modes the array never samples are absent."""
    n, cell, z = 32, 10.0, np.full(32, 8.0)
    k_perp = k_perp_grid(n, cell)
    expected = interferometer.noise_power(telescope, 1000.0, 8.0, k_perp)
    measured_modes = np.isfinite(expected)
    assert measured_modes.any() and (~measured_modes).any()  # the k_perp = 0 modes at least
    powers = []
    for seed in range(6):
        noise = interferometer.observe(np.zeros((n, n, n)), z, cell, np.random.default_rng(seed), telescope, 1000.0)
        powers.append(np.abs(np.fft.fftn(noise)) ** 2 * cell**3 / n**3)  # P = dV |FFT|^2 / N
    power = np.mean(powers, axis=0)
    assert power[~measured_modes].max() < 1e-20
    ratio = power[measured_modes] / expected[measured_modes]
    assert np.median(ratio) == pytest.approx(1.0, rel=0.1)
    longer = interferometer.observe(np.zeros((n, n, n)), z, cell, np.random.default_rng(0), telescope, 4000.0)
    shorter = interferometer.observe(np.zeros((n, n, n)), z, cell, np.random.default_rng(0), telescope, 1000.0)
    assert longer.std() / shorter.std() == pytest.approx(0.5, rel=1e-6)


def test_signal_on_measured_modes_passes_and_noise_grows_with_redshift():
    n, cell = 32, 10.0
    k_perp = k_perp_grid(n, cell)
    power = {z: interferometer.noise_power("SKA-Low", 1000.0, z, k_perp) for z in (7.0, 11.0)}
    finite = np.isfinite(power[7.0]) & np.isfinite(power[11.0])
    assert np.median(power[11.0][finite] / power[7.0][finite]) > 3  # the sky's T ~ nu^-2.6 dominates T_sys
    sky = np.random.default_rng(1).normal(size=(n, n, n))
    seen = interferometer.observe(sky, np.full(n, 7.0), cell, np.random.default_rng(2), "SKA-Low", 1e20)
    measured = np.isfinite(power[7.0])
    np.testing.assert_allclose(np.fft.fftn(seen)[measured], np.fft.fftn(sky)[measured], rtol=1e-3, atol=1e-3)
    assert abs(seen.mean()) < 1e-9  # no zero spacing: each chunk's mean is not measured


def test_a_redshift_outside_the_table_names_the_keys():
    with pytest.raises(ValueError, match="z_min/z_max"):
        interferometer.noise_power("HERA", 1000.0, 20.0, np.ones(3))


def test_a_coverage_floor_drops_the_sparse_edge_of_the_uv_plane():
    k_perp = k_perp_grid(32, 10.0)[:, :, 0]
    every = np.isfinite(interferometer.noise_power("SKA-Low", 1000.0, 9.0, k_perp))
    floored = np.isfinite(interferometer.noise_power("SKA-Low", 1000.0, 9.0, k_perp, min_uv_coverage=0.05))
    assert floored.sum() < every.sum() and not (floored & ~every).any()
    kept = interferometer.noise_power("SKA-Low", 1000.0, 9.0, k_perp[floored])
    assert kept.max() < np.sort(interferometer.noise_power("SKA-Low", 1000.0, 9.0, k_perp[every]))[-1]
