"""MR physics and anatomy for the brain MRI simulator (sciconv/domains/mri.py): signal equations,
Rician noise, smooth random fields, and the MNI152 template pulled through a per-subject deformation.

Numbers and sources are in mri.py's docstring and docs/science.md.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy import ndimage

# (TR, TE, TI) in ms; TI 0 = spin echo. FLAIR's TI nulls CSF: TI ~ T1_csf ln 2 when TR >> T1.
SEQUENCES = {"t1": (500.0, 10.0, 0.0), "t1gd": (500.0, 10.0, 0.0), "t2": (4000.0, 100.0, 0.0),
             "flair": (9000.0, 100.0, 2500.0)}
# proton density (relative), T1 ms, T2 ms, gadolinium mM (in T1Gd only)
TISSUES = {
    "csf": (1.00, 4000.0, 2000.0, 0.0),
    "gm": (0.80, 1820.0, 99.0, 0.0),
    "wm": (0.69, 1084.0, 69.0, 0.0),
    "necrotic": (0.95, 2800.0, 400.0, 0.0),
    "edema": (0.90, 1800.0, 200.0, 0.0),
    "enhancing": (0.85, 1500.0, 110.0, 0.3),
}
GADOLINIUM_R1 = 3.6e-3  # per mM per ms at 3 T

# T2* at 3 T: grey matter 66 ms, white matter 53 ms (Peters et al. 2007, MRI 25:748); the others are
# taken as 0.7 T2, about the grey and white matter ratio (approximate)
T2STAR_MS = {"csf": 1000.0, "gm": 66.0, "wm": 53.0, "necrotic": 280.0, "edema": 140.0, "enhancing": 77.0}
# MPRAGE as ADNI's 3 T protocol runs it (Jack et al. 2008, JMRI 27:685): TR 2300 ms between inversions,
# TI 900 ms to the centre of k-space, 9 degree flips, TE 2.98 ms; 176 readouts 7.1 ms apart per inversion
MPRAGE = {"tr_ms": 2300.0, "ti_ms": 900.0, "flip_deg": 9.0, "te_ms": 2.98, "echo_spacing_ms": 7.1, "readouts": 176}
T1_SEQUENCES = ("spin_echo", "mprage")


def signal(tissue: str, contrast: str, t1_sequence: str = "spin_echo") -> float:
    """Noise-free signal of a tissue in a contrast (relative units). t1_sequence: how T1 and T1Gd are
    acquired, a 2D spin echo or a 3D inversion-prepared gradient echo (MPRAGE)."""
    pd, t1, t2, gad = TISSUES[tissue]
    if contrast == "t1gd" and gad > 0:
        t1 = 1.0 / (1.0 / t1 + GADOLINIUM_R1 * gad)
    if contrast in ("t1", "t1gd") and t1_sequence == "mprage":
        return float(pd * abs(mprage_centre_mz(t1)) * np.sin(np.deg2rad(MPRAGE["flip_deg"]))
                     * np.exp(-MPRAGE["te_ms"] / T2STAR_MS[tissue]))
    tr, te, ti = SEQUENCES[contrast]
    recovery = abs(1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1)) if ti > 0 else 1 - np.exp(-tr / t1)
    return float(pd * recovery * np.exp(-te / t2))


def mprage_centre_mz(t1: float, params: dict = MPRAGE, cycles: int = 8) -> float:
    """Longitudinal magnetisation (of M0) at the centre of k-space in MPRAGE's steady state, by Bloch
    recursion: inversion, free recovery, a train of `readouts` small flips (linear order, the centre
    line in the middle of the train at TI), recovery to TR, repeated until the cycle repeats itself."""
    n, spacing, alpha = params["readouts"], params["echo_spacing_ms"], np.deg2rad(params["flip_deg"])
    before = params["ti_ms"] - n / 2 * spacing
    after = params["tr_ms"] - before - n * spacing
    if before < 0 or after < 0:
        raise ValueError("MPRAGE timing: the readout train does not fit between inversion and TR")

    def relax(mz, t):
        return 1 - (1 - mz) * np.exp(-t / t1)

    mz, centre = 1.0, 0.0
    for _ in range(cycles):
        mz = relax(-mz, before)
        for k in range(n):
            if k == n // 2:
                centre = mz
            mz = relax(mz * np.cos(alpha), spacing)
        mz = relax(mz, after)
    return float(centre)


def rician(rng: np.random.Generator, clean: np.ndarray, sigma: float, correlated: bool = False) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise: Rician in tissue, Rayleigh where clean is 0.
    correlated: the noise as reconstruction leaves it, white in k-space and apodised there (a raw-data
    filter along every axis before the Fourier transform), so neighbouring voxels' noise is correlated
    (0.39 with the default filter); sigma is still each voxel's noise sd."""
    real, imaginary = rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape)
    if correlated:
        noise = reconstruction_filtered(real + 1j * imaginary)
        real, imaginary = noise.real, noise.imag
    return np.hypot(clean + real, imaginary)


def reconstruction_filtered(noise: np.ndarray, taper: float = 0.5) -> np.ndarray:
    """Complex image-space noise through k-space and a separable raw-data filter, rescaled to its sd. The
    filter is a Tukey window: flat over the centre of k-space and a cosine roll-off over the outer
    `taper` share (a Hamming window over all of it would correlate neighbours by 0.63, a harsher
    filter than scanners apply)."""
    from scipy.signal.windows import tukey

    kspace = np.fft.fftn(noise)
    for axis, n in enumerate(noise.shape):
        window = np.fft.ifftshift(tukey(n, taper))  # peaked at k = 0, where fftn puts it
        kspace *= window.reshape([-1 if a == axis else 1 for a in range(noise.ndim)])
    filtered = np.fft.ifftn(kspace)
    return filtered * (noise.std() / max(filtered.std(), 1e-12))


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], control_points: int = 5) -> np.ndarray:
    """A smooth random field of unit sd: Gaussian values on a coarse grid, interpolated cubically."""
    coarse = rng.normal(0, 1, (control_points,) * len(shape))
    # cubic up to a quarter of the size, then linear: as smooth to the eye, 20x cheaper than cubic all the way
    quarter = [max(control_points, s // 4) for s in shape]
    field = ndimage.zoom(coarse, [q / control_points for q in quarter], order=3, mode="nearest")
    field = ndimage.zoom(field, [s / q for s, q in zip(shape, field.shape)], order=1, mode="nearest")
    field = np.pad(field, [(0, max(0, s - f)) for s, f in zip(shape, field.shape)], mode="edge")
    field = field[tuple(slice(0, s) for s in shape)]
    return (field - field.mean()) / max(field.std(), 1e-6)


def bias_field(rng: np.random.Generator, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    """A smooth multiplicative field spanning [low, high] over the volume."""
    field = smooth_field(rng, shape, control_points=3)
    field = (field - field.min()) / max(np.ptp(field), 1e-6)
    return low + (high - low) * field


@cache
def template() -> dict:
    """The MNI ICBM152 2009 maps at 1 mm from nilearn's package: GM, WM, CSF probabilities and the affine."""
    from nilearn import datasets

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    gm = np.asarray(gm_img.get_fdata(), np.float32).clip(0, 1)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), np.float32).clip(0, 1)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata(), np.float32) > 0
    csf = np.where(brain, np.clip(1 - gm - wm, 0, 1), 0).astype(np.float32)
    # outside the brain mask nothing is tissue (skull-stripped, as BraTS volumes are)
    gm, wm = gm * brain, wm * brain
    corners = np.argwhere(brain)
    lo, hi = corners.min(0), corners.max(0)
    affine = gm_img.affine
    return {"gm": gm, "wm": wm, "csf": csf, "affine": affine,
            "bbox_mm": (affine[:3, :3] @ lo + affine[:3, 3], affine[:3, :3] @ hi + affine[:3, 3])}


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def subject_grid(voxel_mm: np.ndarray, margin_mm: float = 12.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """(shape, RAS affine) of a grid covering the template brain plus a margin at this voxel size."""
    lo, hi = template()["bbox_mm"]
    lo, hi = lo - margin_mm, hi + margin_mm
    shape = tuple(int(np.ceil((h - l) / v)) for l, h, v in zip(lo, hi, voxel_mm))
    affine = np.eye(4)
    affine[:3, :3] = np.diag(voxel_mm)
    affine[:3, 3] = lo + voxel_mm / 2
    return shape, affine


def world_points(shape, affine: np.ndarray) -> np.ndarray:
    """(3, *shape) world coordinates (mm) of every voxel centre."""
    index = np.indices(shape, dtype=np.float32).reshape(3, -1)
    return (affine[:3, :3] @ index + affine[:3, 3:4]).reshape(3, *shape).astype(np.float32)


def tissue_maps(rng: np.random.Generator, points: np.ndarray, src: dict) -> dict[str, np.ndarray]:
    """The template's tissue probabilities pulled back through this subject's deformation."""
    tpl = template()
    centre = np.mean(tpl["bbox_mm"], axis=0).astype(np.float32)[:, None]
    # subject -> template: undo this subject's scaling and rotation about the brain centre
    scale = rng.uniform(*src["scale"], 3)
    linear = np.diag(1 / scale) @ rotation(rng, src["rotation_deg"]).T
    shift = rng.normal(0, 3.0, 3)[:, None]
    flat = points.reshape(3, -1)
    moved = linear.astype(np.float32) @ (flat - centre) + centre - shift.astype(np.float32)
    if src["deformation_mm"] > 0:
        moved += np.stack([smooth_field(rng, points.shape[1:]).ravel() for _ in range(3)]) * src["deformation_mm"]
    inverse = np.linalg.inv(tpl["affine"])
    index = inverse[:3, :3] @ moved + inverse[:3, 3:4]
    return {name: ndimage.map_coordinates(tpl[name], index, order=1, mode="constant", cval=0.0).reshape(
        points.shape[1:]) for name in ("gm", "wm", "csf")}
