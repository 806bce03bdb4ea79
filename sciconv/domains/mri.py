"""Brain MRI: 3D tumour segmentation (BraTS labels) and tumour/no-tumour classification from NIfTI.

Everything MRI-specific lives here (the signal equations and the template anatomy in
_mr_physics.py): the simulator, the preprocessing (RAS, spacing,
head crop, z-score within the head), 3D augmentation and the classical baseline
(FLAIR hyperintensity plus morphology).

Simulator, in order (numbers and sources; see also shared/science.md):
  - Anatomy: the MNI ICBM152 2009 symmetric template's grey- and white-matter probability maps
    and brain mask, read from nilearn's installed package (no download); CSF is the rest of the
    mask. Each subject is the template under a random rotation, per-axis scaling, translation and
    a smooth displacement field, sampled on the subject's own voxel grid (some anisotropic, e.g.
    2 x 2 x 4 mm; a thick slice is the mean of finer samples through it, its partial volume).
  - Tumour (in a configurable share of subjects), centred in white matter: a necrotic core,
    an enhancing rim and surrounding edema, each the level set of a distance to the centre
    perturbed by smooth noise, so the shape is irregular; BraTS labels 1 necrotic core,
    2 edema, 4 enhancing tumour (Menze et al. 2015, IEEE TMI 34:1993). Edema thins outward: its
    share of a voxel falls from 1 next to the core to `edema_fade` at its border, so its edge is
    only faintly bright, as vasogenic edema's is.
  - Contrasts from the spin-echo signal equation S = PD (1 - exp(-TR/T1)) exp(-TE/T2) and, for
    FLAIR, the inversion-recovery magnitude |1 - 2 exp(-TI/T1) + exp(-TR/T1)|. T1 and T1Gd by
    default as MPRAGE (a 3D inversion-prepared gradient echo, ADNI's 3 T protocol: TR 2300 ms,
    TI 900 ms, 9 degrees, TE 2.98 ms; Jack et al. 2008), its magnetisation at the centre of
    k-space by Bloch recursion over the readout train, times exp(-TE/T2*) (Peters et al. 2007). Normal tissue
    at 3 T: WM T1 1084 ms T2 69 ms, GM T1 1820 ms T2 99 ms (Stanisz et al. 2005, MRM 54:507);
    CSF T1 4000 ms T2 2000 ms. Gadolinium shortens T1 in the enhancing rim,
    1/T1 = 1/T1_0 + r1 C with r1 = 3.6 /mM/s at 3 T (Rohrer et al. 2005, Invest Radiol 40:715)
    and C = 0.3 mM. Tumour relaxation times are illustrative, chosen so that edema is bright on
    T2 and FLAIR (more free water), necrosis dark on T1Gd, the rim bright on T1Gd.
  - White-matter hyperintensities (small vascular lesions, common in older brains) in any subject:
    T2/FLAIR bright like edema, no gadolinium uptake, not tumour and not labelled.
  - A smooth multiplicative bias field, 0.8-1.2 by default (BrainWeb's "40%" intensity
    non-uniformity), the same for every contrast (one receive coil).
  - Rician noise: the magnitude of complex Gaussian noise whose sigma is the white-matter signal
    of each contrast over the configured SNR (BrainWeb-style); Rayleigh in the background. By
    default the noise is correlated as reconstruction leaves it: white in k-space, apodised by a raw-
    data filter per axis (a Tukey window, cosine roll-off over the outer half of k-space) before the
    Fourier transform: neighbours' noise correlation 0.39.
  - Written as 4D NIfTI (x, y, z, contrast) int16 with scl_slope, and a label NIfTI on the same
    grid; a share of subjects is stored in another orientation (LPS, LAS or sagittal PIR).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sciconv.domains.base import Baseline
from scipy import ndimage
from skimage.measure import block_reduce

# the MR signal equations and the anatomy live in _mr_physics.py (TISSUES is re-exported for the tests)
from sciconv.domains._mr_physics import (  # noqa: F401
    MPRAGE, T1_SEQUENCES, TISSUES, bias_field, rician, signal, smooth_field, subject_grid, tissue_maps, world_points,
)

TASKS = ("segmentation", "classification")
CLASS_NAMES = {"segmentation": ["background", "necrotic_core", "edema", "enhancing"],
               "classification": ["no_tumour", "tumour"]}
NECROTIC, EDEMA, ENHANCING = 1, 2, 4  # BraTS label values in the files
CONTRASTS = ("t1", "t1gd", "t2", "flair")
DISPLAY_CHANNEL = "flair"  # saliency montages are drawn over it: the whole tumour shows there

CHANNEL_NAMES_PREFIX = "channels="

_pos = {"type": "number", "exclusiveMinimum": 0}
_range = {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 2, "maxItems": 2}
_voxel = {"type": "array", "items": _pos, "minItems": 3, "maxItems": 3}

SAMPLE_COUNT_KEY = "n_subjects"  # the source key that says how many files the simulator writes

SCHEMAS = {
    "source": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "kind": {"type": "string", "enum": ["simulate"]},
            "n_subjects": {"type": "integer", "minimum": 3, "default": 40},
            "tumour_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.9,
                                "description": "share of subjects with a tumour"},
            "contrasts": {"type": "array", "items": {"type": "string", "enum": list(CONTRASTS)}, "minItems": 1,
                          "uniqueItems": True, "default": list(CONTRASTS),
                          "description": "channels, in this order"},
            "voxel_sizes_mm": {"type": "array", "items": _voxel, "minItems": 1, "default": [[1, 1, 1], [1, 1, 3]],
                               "description": "each subject's voxel size (R, A, S) is drawn from these"},
            "reoriented_fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.3,
                                    "description": "share of files stored in LPS, LAS or PIR order instead of RAS"},
            "snr": {**_pos, "default": 20.0, "description": "white-matter signal over the noise sigma"},
            "t1_sequence": {"type": "string", "enum": list(T1_SEQUENCES), "default": "mprage",
                            "description": "how T1 and T1Gd are acquired: mprage (a 3D inversion-prepared gradient "
                                           "echo, as most tumour datasets' T1 scans) or spin_echo (2D)"},
            "noise": {"type": "string", "enum": ["reconstructed", "white"], "default": "reconstructed",
                      "description": "reconstructed: correlated between neighbouring voxels, as k-space filtering "
                                     "leaves it; white: independent voxels"},
            "bias_field": {**_range, "default": [0.8, 1.2], "description": "range of the multiplicative field"},
            "deformation_mm": {"type": "number", "minimum": 0, "default": 3.0,
                               "description": "sd of the smooth displacement field"},
            "scale": {**_range, "default": [0.9, 1.1], "description": "per-axis brain scaling range"},
            "rotation_deg": {"type": "number", "minimum": 0, "default": 8.0},
            "core_radius_mm": {**_range, "default": [10.0, 24.0], "description": "tumour core (necrosis + rim)"},
            "edema_margin_mm": {**_range, "default": [4.0, 16.0], "description": "edema beyond the core"},
            "necrotic_fraction": {**_range, "default": [0.1, 0.75],
                                  "description": "necrotic radius over core radius; 0 = no necrosis"},
            "irregularity": {"type": "number", "minimum": 0, "maximum": 0.6, "default": 0.25},
            "edema_fade": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                           "description": "edema's free-water share at its outer border, relative to next to "
                                          "the core (1: uniform edema)"},
            "wm_hyperintensities": {"type": "number", "minimum": 0, "default": 2.0,
                                    "description": "mean number (Poisson) of small white-matter lesions per subject, "
                                                   "bright on T2 and FLAIR, not enhancing and not labelled: "
                                                   "what a FLAIR threshold mistakes for tumour"},
            "wm_lesion_radius_mm": {**_range, "default": [2.0, 5.0]},
        },
        "required": ["kind"],
    },
    "preprocess": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "spacing_mm": {"anyOf": [_voxel, {"type": "null"}], "default": None,
                           "description": "target voxel size; null = the plan's: the median spacing of the "
                                          "ingested scans (nnU-Net's rule for anisotropic ones)"},
            "crop_foreground": {"type": "boolean", "default": True},
            "margin_mm": {"type": "number", "minimum": 0, "default": 4.0, "description": "kept around the head"},
            "size": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 8}, "minItems": 3,
                     "maxItems": 3, "default": None,
                     "description": "resize the cropped volume to this many voxels (classification of whole "
                                    "volumes needs one size); null keeps the spacing"},
        },
    },
    "augment": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "prob": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.3},
            "flip": {"type": "boolean", "default": True},
            "rotate_deg": {"type": "number", "minimum": 0, "default": 10.0},
            "scale": {"type": "number", "minimum": 0, "default": 0.1},
            "bias_field": {"type": "number", "minimum": 0, "default": 0.3,
                           "description": "MONAI RandBiasField coefficient range; 0 = off"},
            "noise_std": {"type": "number", "minimum": 0, "default": 0.05},
            "gamma": {**_range, "default": [0.7, 1.5]},
            "elastic": {"type": "boolean", "default": False, "description": "3D elastic deformation (slow on CPU)"},
        },
    },
    "baseline": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "channel": {"type": "string", "default": "flair",
                        "description": "contrast thresholded (by name, else the last channel)"},
            "z_threshold": {"type": "number", "default": 1.5,
                            "description": "voxels this many sd above the head's mean are hyperintense"},
            "min_volume_ml": {"type": "number", "minimum": 0, "default": 0.5},
        },
    },
}

DEFAULTS = {
    # 3D U-Net with instance norm (intensities are z-scored per volume; patches vary in content)
    "model": {"name": "unet", "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1,
              "norm": "instance"},
    "train": {"patch_size": [64, 64, 64], "patch_sampling": "pos_neg", "pos_neg_ratio": 2.0},
    # labels in the files are BraTS values 1, 2, 4; evaluation uses BraTS's nested regions
    "mask_values": [0, NECROTIC, EDEMA, ENHANCING],
    "regions": {"wt": ["necrotic_core", "edema", "enhancing"], "tc": ["necrotic_core", "enhancing"],
                "et": ["enhancing"]},
    # HiResCAM: Grad-CAM's channel-averaged gradients spread over the whole volume in a 3D U-Net
    "explain": {"method": "hirescam"},
}


# --------------------------------------------------------------------------- tumour and images
def tumour_labels(rng: np.random.Generator, points: np.ndarray, tissue: dict,
                  src: dict) -> tuple[np.ndarray, np.ndarray]:
    """BraTS label volume (0, 1, 2, 4) of one irregular tumour centred in white matter, and the
    edema's strength per voxel: its share of free water, 1 at the core falling to src['edema_fade']
    at its outer border (vasogenic edema thins outward, so its edge is only faintly bright)."""
    shape = points.shape[1:]
    candidates = np.argwhere(ndimage.binary_erosion(tissue["wm"] > 0.6, iterations=2))
    if not len(candidates):
        candidates = np.argwhere(tissue["wm"] > 0.3)
    centre = points[(slice(None), *candidates[rng.integers(len(candidates))])][:, None, None, None]
    distance = np.sqrt(((points - centre) ** 2).sum(0))
    core_r = rng.uniform(*src["core_radius_mm"])
    edema_r = core_r + rng.uniform(*src["edema_margin_mm"])
    necrotic_r = core_r * rng.uniform(*src["necrotic_fraction"])
    a = src["irregularity"]
    core_d = distance / (1 + a * np.clip(smooth_field(rng, shape, 7), -2.5, 2.5) / 2.5)
    edema_d = distance / (1 + 1.6 * a * np.clip(smooth_field(rng, shape, 9), -2.5, 2.5) / 2.5)
    brain = (tissue["gm"] + tissue["wm"] + tissue["csf"]) > 0.5
    labels = np.zeros(shape, np.uint8)
    # edema spreads through tissue, not through the fluid of ventricles and sulci
    labels[(edema_d < edema_r) & brain & (tissue["csf"] < 0.5)] = EDEMA
    labels[(core_d < core_r) & brain] = ENHANCING
    labels[(core_d < necrotic_r) & brain] = NECROTIC
    depth = np.clip((edema_d - core_r) / max(edema_r - core_r, 1e-6), 0, 1)
    strength = np.where(labels == EDEMA, 1 - (1 - src["edema_fade"]) * depth, 1.0).astype(np.float32)
    return labels, strength


def white_matter_lesions(rng: np.random.Generator, points: np.ndarray, tissue: dict, src: dict) -> np.ndarray:
    """Boolean map of a Poisson number of small ellipsoidal lesions centred in white matter."""
    lesions = np.zeros(points.shape[1:], bool)
    candidates = np.argwhere(tissue["wm"] > 0.7)
    for _ in range(rng.poisson(src["wm_hyperintensities"]) if len(candidates) else 0):
        centre = points[(slice(None), *candidates[rng.integers(len(candidates))])][:, None, None, None]
        radii = rng.uniform(*src["wm_lesion_radius_mm"], 3)[:, None, None, None]
        lesions |= (((points - centre) / radii) ** 2).sum(0) < 1
    return lesions & (tissue["wm"] > 0.3)


def contrast_images(tissue: dict, labels: np.ndarray, contrasts: list[str], wm_lesions: np.ndarray | None = None,
                    edema_strength: np.ndarray | None = None, t1_sequence: str = "spin_echo") -> np.ndarray:
    """(C, *shape) noise-free images: each voxel the tissue-fraction-weighted signal (partial volume)."""
    fractions = dict(tissue)
    lesion = {"necrotic": labels == NECROTIC, "edema": labels == EDEMA, "enhancing": labels == ENHANCING}
    if wm_lesions is not None:  # gliosis and demyelination hold water like edema; no label
        lesion["edema"] = lesion["edema"] | (wm_lesions & (labels == 0))
    # a lesion's boundary shares its voxel with the tissue it replaces
    soft = {name: ndimage.gaussian_filter(m.astype(np.float32), 0.7) for name, m in lesion.items()}
    if edema_strength is not None:  # thin edema: part edema, part the tissue it soaks
        soft["edema"] = soft["edema"] * edema_strength
    total = sum(soft.values())
    healthy = np.clip(1 - total, 0, 1)
    fractions = {k: v * healthy for k, v in fractions.items()} | soft
    return np.stack([sum(fractions[t] * signal(t, c, t1_sequence) for t in fractions)
                     for c in contrasts]).astype(np.float32)


def simulate_subject(rng: np.random.Generator, src: dict, has_tumour: bool):
    """(image (C, x, y, z) in RAS, labels (x, y, z), RAS affine, attributes) of one subject."""
    voxel = np.asarray(src["voxel_sizes_mm"][rng.integers(len(src["voxel_sizes_mm"]))], float)
    finest = voxel.min()
    # thick voxels are rendered finer along their long axes and averaged: their partial volume
    factors = tuple(int(min(4, round(v / finest))) for v in voxel)
    shape, affine = subject_grid(voxel)
    fine_affine = affine.copy()
    fine_affine[:3, :3] = np.diag(voxel / factors)
    fine_affine[:3, 3] = affine[:3, 3] - voxel / 2 + voxel / np.asarray(factors) / 2
    fine_shape = tuple(s * f for s, f in zip(shape, factors))
    points = world_points(fine_shape, fine_affine)
    tissue = tissue_maps(rng, points, src)
    if has_tumour:
        labels, edema_strength = tumour_labels(rng, points, tissue, src)
    else:
        labels, edema_strength = np.zeros(fine_shape, np.uint8), None
    clean = contrast_images(tissue, labels, src["contrasts"], white_matter_lesions(rng, points, tissue, src),
                            edema_strength, src["t1_sequence"])
    clean = block_reduce(clean, (1, *factors), np.mean)
    # labels at each voxel's centre sample (the annotator's view of a thick slice)
    labels = labels[tuple(slice(f // 2, None, f) for f in factors)][tuple(slice(0, s) for s in shape)]
    field = bias_field(rng, clean.shape[1:], *src["bias_field"])
    image = np.stack([rician(rng, channel * field, signal("wm", c, src["t1_sequence"]) / src["snr"],
                             correlated=src["noise"] == "reconstructed")
                      for channel, c in zip(clean, src["contrasts"])])
    attrs = {"voxel_mm": voxel.tolist(), "tumour_voxels": int((labels > 0).sum()),
             "tumour_ml": float((labels > 0).sum() * np.prod(voxel) / 1000)}
    return image.astype(np.float32), labels, affine, attrs


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, orientation: str, is_label: bool,
                contrasts: list[str] = ()) -> None:
    """Store a RAS array (channels first for images) in the given axis orientation, as real scanners' files vary."""
    import nibabel as nib

    array = data if is_label else np.moveaxis(data, 0, -1)  # NIfTI keeps channels in the 4th dimension
    img = nib.Nifti1Image(array, affine)
    if orientation != "RAS":
        transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                                    nib.orientations.axcodes2ornt(tuple(orientation)))
        img = img.as_reoriented(transform)
    array, affine = np.asarray(img.dataobj), img.affine
    if is_label:
        img = nib.Nifti1Image(array.astype(np.uint8), affine)
    else:
        # int16 with a scale factor, as scanners export; the reader applies scl_slope
        slope = float(np.abs(array).max() / 30000.0) or 1.0
        img = nib.Nifti1Image(np.round(array / slope).astype(np.int16), affine)
        img.header.set_slope_inter(slope, 0.0)
        # the channel names travel in the header's description, where the reader finds them
        img.header["descrip"] = CHANNEL_NAMES_PREFIX + ",".join(contrasts)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def simulate(src: dict, out_dir, seed: int, progress=None) -> list[dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(src["n_subjects"]):
        has_tumour = bool(rng.random() < src["tumour_fraction"])
        image, labels, affine, attrs = simulate_subject(rng, src, has_tumour)
        orientation = "RAS" if rng.random() >= src["reoriented_fraction"] else str(rng.choice(["LPS", "LAS", "PIR"]))
        name = f"subject_{i:04d}"
        write_nifti(out_dir / f"{name}.nii.gz", image, affine, orientation, is_label=False,
                    contrasts=src["contrasts"])
        write_nifti(out_dir / f"{name}_seg.nii.gz", labels, affine, orientation, is_label=True)
        # the label (tumour or not) also stratifies the split of a segmentation dataset
        rows.append({"image": f"{name}.nii.gz", "mask": f"{name}_seg.nii.gz", "label": int(attrs["tumour_voxels"] > 0),
                     "group": name, "orientation": orientation, "voxel_mm": json.dumps(attrs["voxel_mm"]),
                     "tumour_ml": f"{attrs['tumour_ml']:.2f}"})
        if progress:
            progress(i + 1)
    return rows


# --------------------------------------------------------------------------- preprocessing
def channel_names(meta: dict, n_channels: int) -> list[str]:
    """Contrast names from the file's description (channels=t1,flair), else channel_0, channel_1, ..."""
    description = str(meta.get("descrip", ""))
    if description.startswith(CHANNEL_NAMES_PREFIX):
        names = description[len(CHANNEL_NAMES_PREFIX):].split(",")
        if len(names) == n_channels:
            return names
    return [f"channel_{i}" for i in range(n_channels)]


def input_channels(cfg: dict) -> int:
    """The simulator's contrasts; a user's own files bring as many channels as they hold (4 assumed here)."""
    return len(cfg["source"].get("contrasts") or CONTRASTS)


def head_mask(image: np.ndarray) -> np.ndarray:
    """The head (brain, for skull-stripped scans): Otsu on the mean of the channels, holes filled, largest part."""
    from monai.transforms.utils import get_largest_connected_component_mask
    from skimage import filters

    mean = image.mean(0)
    foreground = mean > filters.threshold_otsu(mean)
    foreground = ndimage.binary_closing(foreground, iterations=2)
    return ndimage.binary_fill_holes(get_largest_connected_component_mask(foreground))


NORMALISATION = "z-score per contrast inside the head (MR intensities have no absolute unit)"
SPACING_KEY = "spacing_mm"  # null: the planner's target spacing (sciconv.planning.target_spacing)


def preprocess(image: np.ndarray, meta: dict, params: dict, mask: np.ndarray | None = None):
    """MONAI dictionary transforms: orientation RAS, resampling to spacing_mm, crop to the head, z-score in it.

    Returns attrs with the grid's spacing and affine (world mm), so masks predicted on this grid
    can be written back onto the source file's grid, and the channel names.
    """
    import torch
    from monai.data import MetaTensor
    from monai.transforms import CropForegroundd, Orientationd, Resized, Spacingd

    affine = torch.as_tensor(np.asarray(meta.get("affine", np.eye(4)), np.float64))
    if "affine" not in meta and meta.get("spacing"):
        affine = torch.diag(torch.tensor([*map(float, meta["spacing"][:3]), 1.0], dtype=torch.float64))
    keys = ["image"] + (["mask"] if mask is not None else [])
    sample = {"image": MetaTensor(torch.from_numpy(np.ascontiguousarray(image, np.float32)), affine=affine)}
    if mask is not None:
        sample["mask"] = MetaTensor(torch.from_numpy(np.ascontiguousarray(mask[None], np.float32)), affine=affine)
    modes = ["bilinear", "nearest"][: len(keys)]
    sample = Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(sample)
    sample = Spacingd(keys, pixdim=params["spacing_mm"], mode=modes)(sample)
    head = head_mask(sample["image"].numpy())
    sample["head"] = MetaTensor(torch.from_numpy(head[None].astype(np.float32)), affine=sample["image"].affine)
    if params["crop_foreground"]:
        margin = [int(round(params["margin_mm"] / s)) for s in params["spacing_mm"]]
        sample = CropForegroundd(keys + ["head"], source_key="head", margin=margin, allow_smaller=True)(sample)
    if params["size"]:
        sample = Resized(keys + ["head"], spatial_size=params["size"],
                         mode=["trilinear", "nearest", "nearest"][: len(keys)] + ["nearest"])(sample)
    volume = sample["image"].numpy().astype(np.float32)
    inside = sample["head"].numpy()[0] > 0.5
    # z-score per contrast within the head: MR intensities have no absolute unit
    for channel in volume:
        values = channel[inside]
        channel[...] = np.where(inside, (channel - values.mean()) / max(values.std(), 1e-6), 0.0)
    grid_affine = sample["image"].affine.numpy()
    attrs = {"affine": grid_affine.tolist(), "spacing": np.sqrt((grid_affine[:3, :3] ** 2).sum(0)).tolist(),
             "channels": channel_names(meta, volume.shape[0]), "head_voxels": int(inside.sum())}
    out_mask = np.rint(sample["mask"].numpy()[0]).astype(np.int64) if mask is not None else None
    return volume, out_mask, attrs


def augment_specs(params: dict) -> list[dict]:
    """Random 3D augmentation after the cache: affine, flips, bias field, noise, gamma, optional elastic."""
    prob = params["prob"]
    out = []
    if params["rotate_deg"] > 0 or params["scale"] > 0:
        out.append({"kind": "affine", "prob": prob, "rotate": float(np.deg2rad(params["rotate_deg"])),
                    "scale": params["scale"], "padding": "zeros"})
    if params["elastic"]:
        out.append({"kind": "elastic", "prob": prob, "sigma": [5, 8], "magnitude": [50, 150]})
    if params["flip"]:
        out += [{"kind": "flip", "prob": prob, "axis": axis} for axis in range(3)]
    if params["bias_field"] > 0:
        out.append({"kind": "bias_field", "prob": prob, "coeff": [0.0, params["bias_field"]]})
    if params["gamma"][0] != 1 or params["gamma"][1] != 1:
        out.append({"kind": "gamma", "prob": prob, "gamma": list(params["gamma"])})
    if params["noise_std"] > 0:
        out.append({"kind": "noise", "prob": prob, "std": params["noise_std"]})
    return out


# --------------------------------------------------------------------------- baseline
def baseline(image: np.ndarray, attrs: dict, cfg: dict) -> Baseline:
    """FLAIR hyperintensity: threshold the z-scored contrast, open, drop small parts, keep the largest, fill.

    The region found, labelled edema (the method finds whole tumour, not its parts), is the mask a
    segmentation is scored on; its volume in ml is the score a classification ranks by.
    """
    from monai.transforms.utils import get_largest_connected_component_mask
    from skimage import morphology

    params = cfg["baseline"]
    names = list(attrs.get("channels") or [])
    index = names.index(params["channel"]) if params["channel"] in names else image.shape[0] - 1
    spacing = np.asarray(attrs.get("spacing") or [1.0, 1.0, 1.0], float)
    bright = image[index] > params["z_threshold"]
    bright = ndimage.binary_opening(bright, structure=morphology.ball(1))
    min_voxels = int(params["min_volume_ml"] * 1000 / np.prod(spacing))
    bright = morphology.remove_small_objects(bright, max_size=max(min_voxels - 1, 0))
    bright = ndimage.binary_fill_holes(get_largest_connected_component_mask(bright))
    edema = CLASS_NAMES["segmentation"].index("edema")
    return Baseline(mask=np.where(bright, edema, 0).astype(np.uint8), score=float(bright.sum() * np.prod(spacing) / 1000))
