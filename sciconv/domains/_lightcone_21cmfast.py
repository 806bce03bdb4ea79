"""21cmFAST 4.x as the light-cone generator (source.generator: 21cmfast, the cosmo extra): the same
cosmology, box, cells, redshift range and parameters as the built-in generator, converted to the
lightcone domain's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciconv.domains._cosmology import H, N_S, OMEGA_B, OMEGA_M, SIGMA_8
from sciconv.domains._interferometer import observed


def simulate_21cmfast(seed: int, src: dict, params: dict, cache_dir: Path) -> tuple[np.ndarray, dict]:
    """The same light-cone from 21cmFAST 4.x (constant-zeta source model), converted to this module's layout.

    Same cosmology, box, cells, redshift range and parameters as the built-in generator, so the
    two can be compared one to one (benchmarks/lightcone_fidelity.py). With source.spin_temperature
    21cmFAST evolves the gas temperature under X-ray heating (L_X, E_0) from z = 20 and the cone
    carries T_S fluctuations: absorption (dTb < 0) before the gas is heated, as in Greig & Mesinger
    2017's 21CMMC light-cones.
    """
    try:
        import py21cmfast as p21c
    except ImportError as err:
        raise RuntimeError("source.generator 21cmfast needs py21cmfast: pip install 'sciconv[cosmo]' "
                           "(it builds against FFTW and GSL: apt install libfftw3-dev libgsl-dev)") from err
    heating, zmax = {}, src["z_max"] + 1.0
    if src["spin_temperature"]:
        # X-ray heating is integrated from Z_HEAT_MAX down: the evolution starts there
        heating = {"USE_TS_FLUCT": True, "L_X": params["log10_lx"], "NU_X_THRESH": params["e0_ev"]}
        zmax = max(zmax, 20.0)
        heating["Z_HEAT_MAX"] = zmax
    inputs = p21c.InputParameters.from_template(
        ["const-zeta", "tiny"], random_seed=int(seed), HII_DIM=src["sky_cells"],
        BOX_LEN=src["sky_cells"] * src["cell_mpc"], N_THREADS=2, HII_EFF_FACTOR=params["zeta"],
        ION_Tvir_MIN=params["log10_tvir"], R_BUBBLE_MAX=params["r_max"], SIGMA_8=SIGMA_8, hlittle=H, OMm=OMEGA_M,
        OMb=OMEGA_B, POWER_INDEX=N_S, HII_FILTER="spherical-tophat",
        # without this 21cmFAST takes its minimum mass from M_TURN and ignores ION_Tvir_MIN
        M_MIN_in_Mass=False, **heating,
    ).with_logspaced_redshifts(zmin=max(src["z_min"] - 0.3, 5.0), zmax=zmax, zstep_factor=1.1)
    lightconer = p21c.RectilinearLightconer.between_redshifts(
        min_redshift=src["z_min"], max_redshift=src["z_max"], resolution=inputs.simulation_options.cell_size,
        quantities=["brightness_temp", "neutral_fraction"])
    cache_dir.mkdir(parents=True, exist_ok=True)
    cone_obj = p21c.run_lightcone(lightconer=lightconer, inputs=inputs, cache=p21c.OutputCache(cache_dir), write=False)
    cone = np.asarray(cone_obj.lightcones["brightness_temp"], dtype=np.float32)
    nodes = np.asarray(cone_obj.node_redshifts, dtype=float)
    neutral = cone_obj.lightcones["neutral_fraction"].mean(axis=(0, 1))
    slice_z = np.asarray(cone_obj.lightcone_redshifts, dtype=float)
    cone = observed(cone, slice_z, src, np.random.default_rng(seed)).astype(np.float32)
    order = np.argsort(slice_z)
    attrs = {"redshifts": slice_z.tolist(), "box_length_mpc": src["sky_cells"] * src["cell_mpc"],
             "cell_mpc": src["cell_mpc"], "generator": f"21cmfast {p21c.__version__}",
             "cosmology": {"h": H, "omega_m": OMEGA_M, "omega_b": OMEGA_B, "sigma_8": SIGMA_8, "n_s": N_S},
             "coeval_redshifts": sorted(nodes.tolist()),
             "neutral_fraction": np.interp(sorted(nodes), slice_z[order], neutral[order]).tolist(),
             "neutral_fraction_at_split": float(np.interp(src["split_redshift"], slice_z[order], neutral[order])),
             **params}
    return cone, attrs
