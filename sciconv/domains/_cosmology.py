"""Cosmology for the light-cone generator: flat LCDM distances and growth, the BBKS linear power
spectrum normalised to sigma_8, top-hat variances, the minimum halo mass of a virial temperature
and the Sheth-Tormen normalisation of the collapsed fraction.

Kept apart from sciconv/domains/lightcone.py (the domain: simulator, preprocessing, augmentation,
baseline) because it is textbook cosmology with its own tests, not domain logic. The leading
underscore keeps it out of the domain registry.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy import integrate, special

H, OMEGA_M, OMEGA_B, SIGMA_8, N_S = 0.678, 0.31, 0.049, 0.81, 0.965
DELTA_C = 1.686
C_KM_S = 299_792.458
RHO_CRIT_H2 = 2.775e11  # Msun / Mpc^3 per h^2


def hubble(z):
    """H(z) in km/s/Mpc, flat LCDM (radiation neglected)."""
    return 100 * H * np.sqrt(OMEGA_M * (1 + z) ** 3 + 1 - OMEGA_M)


@cache
def _distance_table() -> tuple[np.ndarray, np.ndarray]:
    z = np.linspace(0, 40, 8001)
    return z, integrate.cumulative_trapezoid(C_KM_S / hubble(z), z, initial=0.0)


def comoving_distance(z) -> np.ndarray:
    """Comoving distance from z = 0, Mpc (the integral of c / H tabulated once, 0.005 steps in z)."""
    table_z, table_d = _distance_table()
    return np.interp(np.atleast_1d(np.asarray(z, dtype=float)), table_z, table_d)


def redshift_at(distance_mpc) -> np.ndarray:
    table_z, table_d = _distance_table()
    return np.interp(distance_mpc, table_d, table_z)


def growth_factor(z) -> np.ndarray:
    """Linear growth D(z), D(0) = 1 (Carroll, Press & Turner 1992)."""
    def g(zz):
        om = OMEGA_M * (1 + zz) ** 3 / (OMEGA_M * (1 + zz) ** 3 + 1 - OMEGA_M)
        ol = 1 - om
        return 2.5 * om / (om ** (4 / 7) - ol + (1 + om / 2) * (1 + ol / 70))
    return g(np.asarray(z, dtype=float)) / (1 + np.asarray(z, dtype=float)) / g(0.0)


def transfer_bbks(k) -> np.ndarray:
    q = np.asarray(k) / (OMEGA_M * H**2)  # k in 1/Mpc; Gamma h = Omega_m h^2
    q = np.maximum(q, 1e-10)
    return np.log(1 + 2.34 * q) / (2.34 * q) * (1 + 3.89 * q + (16.1 * q) ** 2 + (5.46 * q) ** 3 + (6.71 * q) ** 4) ** -0.25


def tophat_window(x):
    x = np.maximum(x, 1e-8)
    return 3 * (np.sin(x) - x * np.cos(x)) / x**3


def _unnormalised_power(k):
    return np.asarray(k) ** N_S * transfer_bbks(k) ** 2


def _sigma_integral(radius_mpc) -> np.ndarray:
    """sqrt(int P_unnormalised(k) W^2(kR) k^2 dk / 2 pi^2) on a log-spaced k grid."""
    k = np.logspace(-4, 3, 4000)
    radius = np.atleast_1d(np.asarray(radius_mpc, dtype=float))
    integrand = _unnormalised_power(k)[None] * tophat_window(k[None] * radius[:, None]) ** 2 * k[None] ** 3
    return np.sqrt(np.trapezoid(integrand, np.log(k), axis=1) / (2 * np.pi**2))


@cache
def power_amplitude() -> float:
    """The amplitude that makes sigma(8 Mpc/h) = sigma_8."""
    return float((SIGMA_8 / _sigma_integral(8.0 / H)[0]) ** 2)


@cache
def _sigma_table() -> tuple[np.ndarray, np.ndarray]:
    radii = np.geomspace(1e-3, 1e3, 600)
    return np.log(radii), np.log(np.sqrt(power_amplitude()) * _sigma_integral(radii))


def sigma_r(radius_mpc) -> np.ndarray:
    """rms linear density contrast at z = 0 in top-hat spheres of radius R (Mpc), normalised to sigma_8."""
    log_r, log_sigma = _sigma_table()
    return np.exp(np.interp(np.log(np.atleast_1d(np.asarray(radius_mpc, dtype=float))), log_r, log_sigma))


def linear_power(k) -> np.ndarray:
    """P(k) at z = 0 in Mpc^3 (k in 1/Mpc)."""
    return power_amplitude() * _unnormalised_power(k)


def minimum_halo_mass(t_vir: float, z: float) -> float:
    """Msun of a halo with virial temperature T_vir at z (Barkana & Loeb 2001), in the form 21cmFAST uses.

    M = 7030.97 / h sqrt(Omega_m(z) / (Omega_m Delta_c(z))) (T_vir / (mu (1 + z)))^1.5, with
    Delta_c = 18 pi^2 + 82 d - 39 d^2, d = Omega_m(z) - 1 (Bryan & Norman 1998), and mean
    molecular weight mu 0.6 for ionised gas (T_vir >= 1e4 K) or 1.22 for neutral gas
    (21cmFAST src/cosmology.c TtoM and src/hmf.c).
    """
    omega_z = OMEGA_M * (1 + z) ** 3 / (OMEGA_M * (1 + z) ** 3 + 1 - OMEGA_M)
    d = omega_z - 1
    delta_c = 18 * np.pi**2 + 82 * d - 39 * d**2
    mu = 0.6 if t_vir >= 1e4 else 1.22
    return 7030.97 / H * np.sqrt(omega_z / (OMEGA_M * delta_c)) * (t_vir / (mu * (1 + z))) ** 1.5


def sheth_tormen_boost(nu_min: float) -> float:
    """F_ST(> M_min) / F_PS(> M_min): the collapsed fraction of the Sheth-Tormen mass function over
    Press-Schechter's, at peak height nu = delta_c / sigma(M_min).

    21cmFAST normalises the conditional (extended Press-Schechter) collapsed fraction to the
    unconditional mass function it is given, Sheth-Tormen by default; rare halos (high nu,
    high T_vir, high z) are several times more abundant under Sheth-Tormen.
    f_ST(nu) = A sqrt(2a/pi) (1 + (a nu^2)^-p) exp(-a nu^2 / 2), A 0.3222, a 0.707, p 0.3
    (Sheth & Tormen 1999), integrated over d nu from nu_min (F = int f d nu).
    """
    a, p, amplitude = 0.707, 0.3, 0.3222

    def f_st(nu):
        return amplitude * np.sqrt(2 * a / np.pi) * (1 + (a * nu**2) ** -p) * np.exp(-a * nu**2 / 2)

    # quad copes with the integrable nu^(-2p) rise at small nu that a fixed grid misses
    collapsed = integrate.quad(f_st, nu_min, np.inf, limit=200)[0]
    return float(collapsed / max(special.erfc(nu_min / np.sqrt(2)), 1e-300))


def lagrangian_radius(mass_msun: float) -> float:
    return (3 * mass_msun / (4 * np.pi * RHO_CRIT_H2 * H**2 * OMEGA_M)) ** (1 / 3)
