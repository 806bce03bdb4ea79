"""One-dimensional signals: energy spectra, light curves, waveforms; classified or regressed by a 1D CNN.

Everything signal-specific lives here: two generators, the preprocessing (rebinning, variance-
stabilising transforms for counts, per-signal normalisation), augmentation that respects the
physics, and the classical baselines.

Generators (source.generator):
  - mnist1d: the MNIST-1D data set (Greydanus 2020, arXiv:2011.14439), built locally by the
    `mnist1d` package from its ten digit templates at its default arguments (no download): 5,000
    signals of 40 samples, 4,000 train and 1,000 test, kept as its own split. The paper's test
    accuracies: logistic regression 32 %, MLP 68 %, CNN 94 %.
  - gamma_spectra: gamma-ray spectra of a point source in front of a NaI(Tl) scintillator, written
    as OGIP PHA files (FITS, a SPECTRUM table of CHANNEL and COUNTS); the physics and its sources
    are in _gamma_physics.py. Classes: which isotope is present ("background" for none); target:
    log10 of the activity in Bq.

Baselines: logistic regression on the raw signal, and an MLP beside it (MNIST-1D's comparison);
for spectra, a peak search over a SNIP background (Morhac et al. 1997) and a match of the peaks to
the isotope library, the features a logistic regression (isotope) or a ridge (activity) is fitted on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sciconv.domains.base import Baseline
# the peak search and library match of a spectrum (baseline.method: peaks); re-exported for the tests
from sciconv.domains._spectrum_analysis import inverse_transform, peak_features, snip_background  # noqa: F401

TASKS = ("classification", "regression")
CLASS_NAMES = None  # from the YAML: digits for MNIST-1D, "background" and the isotopes for spectra
SPATIAL_DIMS = (1,)
SAMPLE_COUNT_KEY = "n_samples"

_pos = {"type": "number", "exclusiveMinimum": 0}
_nonneg = {"type": "number", "minimum": 0}
_range = {"type": "array", "items": _pos, "minItems": 2, "maxItems": 2}

SCHEMAS = {
    "source": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "kind": {"type": "string", "enum": ["simulate"]},
            "generator": {"type": "string", "enum": ["mnist1d", "gamma_spectra"], "default": "mnist1d"},
            "n_samples": {"type": "integer", "minimum": 10, "default": 5000,
                          "description": "signals to generate (mnist1d: the package's num_samples, 5,000)"},
            "train_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.8,
                               "description": "mnist1d: the package's train_split; the rest is the test set, kept"},
            "isotopes": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True,
                         "default": ["Am241", "Ba133", "Co57", "Co60", "Cs137", "I131", "Na22", "Tc99m"],
                         "description": "gamma_spectra: one of these (or none) per spectrum; the dataset's classes "
                                        "are background and these, in this order"},
            "background_only_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.15,
                                         "description": "gamma_spectra: share of spectra with no source"},
            "activity_bq": {**_range, "default": [300.0, 10000.0],
                            "description": "gamma_spectra: source activity, drawn log-uniformly"},
            "live_time_s": {**_pos, "default": 60.0},
            "background_cps": {**_nonneg, "default": 40.0,
                               "description": "environmental background counts per second in the crystal"},
            "n_channels": {"type": "integer", "minimum": 64, "default": 1024},
            "max_energy_kev": {**_pos, "default": 3000.0},
            "resolution_at_662": {**_pos, "default": 0.07, "description": "FWHM / E at 662 keV (NaI(Tl): ~7%)"},
            "crystal_radius_cm": {**_pos, "default": 3.81},
            "crystal_thickness_cm": {**_pos, "default": 7.62},
            "distance_cm": {**_pos, "default": 10.0, "description": "source to crystal face, on its axis"},
            "threshold_kev": {**_nonneg, "default": 25.0, "description": "lower-level discriminator"},
            "gain_drift": {**_nonneg, "default": 0.005, "description": "std of the relative gain between spectra"},
            "backscatter_fraction": {**_nonneg, "default": 0.05,
                                     "description": "backscatter peak area relative to the photopeak"},
        },
        "required": ["kind"],
    },
    "preprocess": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "length": {"type": ["integer", "null"], "minimum": 8, "default": None,
                       "description": "rebin every signal to this many bins; null keeps them (they must then agree)"},
            "rebin": {"type": "string", "enum": ["sum", "mean"], "default": "mean",
                      "description": "sum: counts add up (spectra); mean: samples of a curve (waveforms)"},
            "transform": {"type": "string", "enum": ["none", "log", "sqrt", "anscombe"], "default": "none",
                          "description": "for counts: log (log1p), sqrt, or anscombe (2 sqrt(x + 3/8): Poisson noise "
                                         "of unit variance at any rate)"},
            "normalize": {"type": "string", "enum": ["none", "zscore", "max", "sum"], "default": "none",
                          "description": "per signal and channel; none keeps the absolute scale (an activity is "
                                         "read from the counts)"},
            "scale": {**_pos, "default": 1.0, "description": "a fixed factor after the transform (a unit)"},
        },
    },
    "augment": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "gain": {"type": "number", "minimum": 0, "maximum": 0.2, "default": 0.0,
                     "description": "stretch the axis by up to this fraction (a detector's gain drift)"},
            "offset_bins": {**_nonneg, "default": 0.0, "description": "shift the axis by up to this many bins"},
            "poisson": {"type": "boolean", "default": False,
                        "description": "redraw the counts (needs preprocess.transform anscombe and normalize none, "
                                       "where a Poisson draw is a unit Gaussian)"},
            "noise_std": {**_nonneg, "default": 0.0, "description": "Gaussian noise, its std drawn up to this"},
            "prob": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        },
    },
    "baseline": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "method": {"type": "string", "enum": ["raw", "peaks"], "default": "raw",
                       "description": "raw: the signal itself is the feature vector; peaks: peak search and "
                                      "isotope-library match of a spectrum"},
            "learners": {"type": "array", "items": {"type": "string", "enum": ["mlp"]},
                         "uniqueItems": True, "default": ["mlp"],
                         "description": "classification: classical models fitted on the features beside the "
                                        "logistic regression (baseline_*), each reported as baseline_<name>_*"},
            "mlp_hidden": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1,
                           "default": [100, 100], "description": "the MLP's hidden layers (MNIST-1D's: two of 100)"},
            "kev_per_bin": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
                            "description": "peaks: the energy calibration; null reads it from the files "
                                           "(KEVPERCH), adjusted for rebinning"},
            "isotopes": {"type": ["array", "null"], "items": {"type": "string"}, "default": None,
                         "description": "peaks: the library to match; null: every isotope the simulator knows"},
            "resolution_at_662": {**_pos, "default": 0.07,
                                  "description": "peaks: the detector's FWHM / E at 662 keV, which sets the windows"},
        },
    },
}

DEFAULTS = {
    # MONAI's Classifier / Regressor: strided 1D convolutions and a linear head over the flattened
    # features, the architecture of the MNIST-1D paper's CNN (three convolutions of 25 channels)
    "model": {"name": "convnet", "channels": [25, 25, 25], "strides": [2, 2, 2], "kernel_size": 5,
              "num_res_units": 0, "norm": "none"},
    "train": {"epochs": 60, "batch_size": 100, "learning_rate": 0.01, "imbalance": "none"},
    "split": {"val_fraction": 0.1, "test_fraction": 0.2},
    "explain": {"n_samples": 3},
}

NORMALISATION = "per preprocess.transform and preprocess.normalize (none: the signal's own units)"


# --------------------------------------------------------------------------- generators
def simulate(src: dict, out_dir, seed: int, progress=None) -> list[dict]:
    if src["generator"] == "mnist1d":
        return simulate_mnist1d(src, Path(out_dir), seed, progress)
    return simulate_gamma(src, Path(out_dir), seed, progress)


def simulate_mnist1d(src: dict, out_dir: Path, seed: int, progress=None) -> list[dict]:
    """MNIST-1D as its package builds it, one archive of its train and test arrays."""
    from mnist1d.data import get_dataset_args, make_dataset

    out_dir.mkdir(parents=True, exist_ok=True)
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = src["n_samples"], src["train_fraction"], seed
    state = np.random.get_state()  # the package seeds numpy's global generator; leave it as it was
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    archive = out_dir / "mnist1d.npz"
    np.savez(archive, train_images=data["x"].astype(np.float32), train_labels=data["y"].astype(np.int64),
             test_images=data["x_test"].astype(np.float32), test_labels=data["y_test"].astype(np.int64))
    rows = []
    for subset, images, labels in (("train", data["x"], data["y"]), ("test", data["x_test"], data["y_test"])):
        for i, label in enumerate(labels):
            rows.append({"image": archive.name, "member": f"{subset}_images", "index": i, "subset": subset,
                         "label": int(label), "id": f"{subset}_{i:05d}"})
    if progress:
        progress(len(rows), len(rows))
    return rows


def simulate_gamma(src: dict, out_dir: Path, seed: int, progress=None) -> list[dict]:
    """One OGIP PHA file per measurement: a point source of one isotope (or none), Poisson counts."""
    from astropy.io import fits

    from sciconv.domains._gamma_physics import ISOTOPES, Detector, expected_spectrum

    unknown = [name for name in src["isotopes"] if name not in ISOTOPES]
    if unknown:
        raise ValueError(f"source.isotopes: {', '.join(unknown)} not in the simulator's library "
                         f"({', '.join(ISOTOPES)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    detector = Detector(src)
    kev_per_channel = src["max_energy_kev"] / src["n_channels"]
    rows = []
    for i in range(src["n_samples"]):
        isotope = None if rng.random() < src["background_only_fraction"] else str(rng.choice(src["isotopes"]))
        activity = float(math.exp(rng.uniform(*np.log(src["activity_bq"])))) if isotope else 0.0
        gain = 1 + rng.normal(0, src["gain_drift"])
        expected = expected_spectrum(detector, isotope, activity, src["live_time_s"], src["background_cps"], gain, rng)
        counts = rng.poisson(expected).astype(np.int32)
        table = fits.BinTableHDU.from_columns(
            [fits.Column("CHANNEL", "J", array=np.arange(len(counts), dtype=np.int32)),
             fits.Column("COUNTS", "J", array=counts)], name="SPECTRUM")
        for key, value, comment in (
                ("HDUCLASS", "OGIP", "format conforms to OGIP standard"), ("HDUCLAS1", "SPECTRUM", ""),
                ("TELESCOP", "SIMULATED", ""), ("INSTRUME", "NAI3X3", "NaI(Tl) scintillator"),
                ("EXPOSURE", src["live_time_s"], "live time, s"), ("DETCHANS", len(counts), ""),
                ("CHANTYPE", "PHA", ""), ("POISSERR", True, "Poisson errors"),
                ("KEVPERCH", kev_per_channel, "nominal energy calibration, keV per channel"),
                ("OBJECT", isotope or "background", "")):
            table.header[key] = (value, comment)
        name = f"spectrum_{i:05d}.pha"
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(out_dir / name, overwrite=True)
        target = {"log10_activity_bq": math.log10(activity) if activity > 0 else float("nan")}
        rows.append({"image": name, "label": isotope or "background", "target": json.dumps(target),
                     "group": f"measurement{i:05d}"})
        if progress:
            progress(i + 1, src["n_samples"])
    return rows


# --------------------------------------------------------------------------- preprocessing
def input_channels(cfg: dict) -> int:
    return 1  # one per file column; `sciconv inspect` assumes one before the files are read


def rebin(signal: np.ndarray, length: int, how: str) -> np.ndarray:
    """(C, L) -> (C, length). sum: through the cumulative counts, so every count lands in some new bin
    and fractions of an old bin are shared in proportion; mean: the same, divided by the bin widths."""
    old = signal.shape[-1]
    if old == length:
        return signal
    edges = np.linspace(0, old, length + 1)
    cumulative = np.concatenate([np.zeros((signal.shape[0], 1)), np.cumsum(signal, axis=-1)], axis=-1)
    at_edges = np.stack([np.interp(edges, np.arange(old + 1), c) for c in cumulative])
    summed = np.diff(at_edges, axis=-1)
    return summed if how == "sum" else summed * (length / old)


def transform(signal: np.ndarray, params: dict) -> np.ndarray:
    kind = params["transform"]
    if kind != "none" and np.min(signal) < 0:
        raise ValueError(f"preprocess.transform {kind} needs counts (values >= 0); this signal has {signal.min():.3g}")
    if kind == "log":
        signal = np.log1p(signal)
    elif kind == "sqrt":
        signal = np.sqrt(signal)
    elif kind == "anscombe":
        signal = 2 * np.sqrt(signal + 3 / 8)
    signal = signal * params["scale"]
    axis = {"keepdims": True, "axis": -1}
    if params["normalize"] == "zscore":
        signal = (signal - signal.mean(**axis)) / np.maximum(signal.std(**axis), 1e-8)
    elif params["normalize"] == "max":
        signal = signal / np.maximum(np.abs(signal).max(**axis), 1e-8)
    elif params["normalize"] == "sum":
        signal = signal / np.maximum(np.abs(signal).sum(**axis), 1e-8)
    return signal


def preprocess(image: np.ndarray, meta: dict, params: dict, mask: np.ndarray | None = None):
    signal = np.asarray(image, dtype=np.float64)
    attrs = {}
    if meta.get("KEVPERCH"):
        attrs["kev_per_bin"] = float(meta["KEVPERCH"]) * signal.shape[-1] / (params["length"] or signal.shape[-1])
    if params["length"]:
        signal = rebin(signal, params["length"], params["rebin"])
    if params["transform"] in ("log", "sqrt", "anscombe"):
        attrs["counts"] = signal.sum(-1).tolist()  # the total counts, before the transform hides them
    return transform(signal, params).astype(np.float32), mask, attrs


def augment_specs(params: dict) -> list[dict]:
    """Never a flip: an energy or time axis has a direction. A gain and offset shift (the calibration
    drifts), Poisson redraws of the counts, Gaussian noise."""
    out = []
    if params["gain"] > 0 or params["offset_bins"] > 0:
        out.append({"kind": "stretch", "prob": params["prob"], "factor": params["gain"], "offset": params["offset_bins"]})
    if params["poisson"]:
        # in Anscombe units a Poisson redraw around the observed counts adds variance 1 per bin
        out.append({"kind": "noise", "prob": params["prob"], "std": 1.0, "fixed": True})
    if params["noise_std"] > 0:
        out.append({"kind": "noise", "prob": params["prob"], "std": params["noise_std"]})
    return out


def check_config(cfg: dict) -> list[tuple[str, str]]:
    """(key, problem) pairs of settings that contradict each other, or the generator's outputs."""
    problems = []
    pre, src = cfg["preprocess"], cfg["source"]
    if src["kind"] == "simulate" and cfg["task"] == "classification":
        expected = ([str(d) for d in range(10)] if src["generator"] == "mnist1d"
                    else ["background", *src["isotopes"]])
        if list(cfg.get("classes") or []) != expected:
            problems.append(("classes", f"the {src['generator']} generator labels its signals "
                                        f"{', '.join(expected)}: declare classes: [{', '.join(expected)}]"))
    if src["kind"] == "simulate" and cfg["task"] == "regression":
        if src["generator"] != "gamma_spectra" or list(cfg.get("targets") or []) != ["log10_activity_bq"]:
            problems.append(("targets", "regression on generated signals is the activity of gamma_spectra: set "
                                        "source.generator: gamma_spectra and targets: [log10_activity_bq]"))
        elif src["background_only_fraction"] > 0:
            problems.append(("source.background_only_fraction", "a spectrum without a source has no activity to "
                                                                "regress: set it to 0"))
    if cfg["augment"]["poisson"] and (pre["transform"] != "anscombe" or pre["normalize"] != "none"):
        problems.append(("augment.poisson", "redraws counts as unit Gaussian noise in Anscombe units: set "
                                            "preprocess.transform: anscombe and preprocess.normalize: none"))
    return problems


# --------------------------------------------------------------------------- baselines
def baseline(image: np.ndarray, attrs: dict, cfg: dict) -> Baseline:
    params = cfg["baseline"]
    if params["method"] == "raw":
        return Baseline(features=np.asarray(image, dtype=np.float32).ravel())
    return Baseline(features=peak_features(image[0], attrs, cfg))


def baseline_learners(cfg: dict, task: str) -> dict:
    """The classical models of a classification beside the task's logistic regression."""
    if task != "classification":
        return {}
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    params = cfg["baseline"]
    # the MNIST-1D paper's MLP training: Adam at a learning rate of 0.01 in batches of 100 (its 68%
    # needs them; scikit-learn's defaults reach 58-62% on the same data)
    made = {"mlp": lambda: make_pipeline(StandardScaler(), MLPClassifier(
        tuple(params["mlp_hidden"]), learning_rate_init=0.01, batch_size=100, max_iter=1000, random_state=0))}
    return {name: made[name]() for name in params["learners"]}
