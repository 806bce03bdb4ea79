"""Random augmentation, described once by the domain and run two ways.

A domain's `augment_specs(params)` returns a list of plain dicts, each {"kind": ..., "prob": p, ...}:
  flip              axis                      mirror one spatial axis
  rot90             axes (two spatial axes)   turn by 90, 180 or 270 degrees in that (square) plane
  affine            rotate (radians, one per rotation plane or one for all), scale (fraction), padding
  elastic           sigma, magnitude (voxels, ranges), spatial_dims (default 3)   smooth random displacement
  scale_intensity   factor                    image * (1 + u), u in [-factor, factor]
  shift_intensity   offset                    image + u, u in [-offset, offset]
  gamma             gamma (range)             contrast curve on the sample's own min..max
  noise             std, mean, fixed          Gaussian noise, its std drawn from [0, std] per sample (fixed: std itself)
  stretch           factor, offset            a 1D axis stretched by 1 + u (u in [-factor, factor]) and shifted by
                                              up to offset cells: a spectrum's gain and offset drift
  bias_field        coeff (range), degree     a smooth multiplicative field (Legendre polynomials, as MRI coils)
  roll              axes                      periodic shift by a random amount (periodic simulation boxes)
Spatial kinds move the mask with the image (nearest neighbour); intensity kinds touch the image only.

- `monai_transforms(specs, keys)`: the same distributions as MONAI dictionary transforms, one sample
  at a time in a DataLoader: the regular MONAI path, used by the benchmarks' naive and fast-recipe runs.
- `BatchAugment(specs)`: the training path. Every random number of a batch is drawn at once, for the
  whole *global* batch, from one generator the training loop seeds per step; the ops run batched on
  whatever device the batch is on. A data-parallel process applies its rows of the global draw, so
  N processes see exactly the samples one process would.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers import GaussianFilter
from monai.transforms import MapTransform, RandomizableTransform

SPATIAL_KINDS = {"flip", "rot90", "affine", "elastic", "roll", "stretch"}
INTENSITY_KINDS = {"scale_intensity", "shift_intensity", "gamma", "noise", "bias_field"}


def check_specs(specs: list[dict]) -> list[dict]:
    for spec in specs:
        if spec.get("kind") not in SPATIAL_KINDS | INTENSITY_KINDS:
            raise ValueError(f"unknown augmentation kind {spec.get('kind')!r}; known: "
                             f"{', '.join(sorted(SPATIAL_KINDS | INTENSITY_KINDS))}")
    return specs


# --------------------------------------------------------------------------- MONAI, one sample at a time
def monai_transforms(specs: list[dict], keys=("image",)) -> list:
    """MONAI dictionary transforms drawing from the same distributions as BatchAugment."""
    from monai.transforms import (Rand2DElasticd, Rand3DElasticd, RandAdjustContrastd, RandAffined, RandBiasFieldd,
                                  RandFlipd, RandGaussianNoised, RandRotate90d, RandScaleIntensityd,
                                  RandShiftIntensityd)

    keys = list(keys)
    modes = ["bilinear", "nearest"][: len(keys)]
    out = []
    for spec in check_specs(specs):
        kind, prob = spec["kind"], spec["prob"]
        if kind == "flip":
            out.append(RandFlipd(keys, prob=prob, spatial_axis=spec["axis"]))
        elif kind == "rot90":
            out.append(RandRotate90d(keys, prob=prob, max_k=3, spatial_axes=tuple(spec.get("axes", (0, 1)))))
        elif kind == "affine":
            out.append(RandAffined(keys, prob=prob, rotate_range=spec.get("rotate", 0.0),
                                   scale_range=spec.get("scale", 0.0), mode=modes,
                                   padding_mode=spec.get("padding", "zeros")))
        elif kind == "elastic":
            if spec.get("spatial_dims", 3) == 3:
                out.append(Rand3DElasticd(keys, sigma_range=tuple(spec["sigma"]), magnitude_range=tuple(spec["magnitude"]),
                                          prob=prob, mode=modes, padding_mode="zeros"))
            else:  # MONAI's 2D version moves control points; about 3 sigma apart gives a like smoothness
                out.append(Rand2DElasticd(keys, spacing=3 * spec["sigma"][1], magnitude_range=tuple(spec["magnitude"]),
                                          prob=prob, mode=modes, padding_mode="zeros"))
        elif kind == "scale_intensity":
            out.append(RandScaleIntensityd("image", factors=spec["factor"], prob=prob))
        elif kind == "shift_intensity":
            out.append(RandShiftIntensityd("image", offsets=spec["offset"], prob=prob))
        elif kind == "gamma":
            out.append(RandAdjustContrastd("image", prob=prob, gamma=tuple(spec["gamma"])))
        elif kind == "noise":
            out.append(RandGaussianNoised("image", prob=prob, std=spec["std"], mean=spec.get("mean", 0.0),
                                          sample_std=not spec.get("fixed", False)))
        elif kind == "stretch":
            raise ValueError("augmentation kind stretch has no MONAI transform; it runs in BatchAugment only")
        elif kind == "bias_field":
            out.append(RandBiasFieldd("image", coeff_range=tuple(spec["coeff"]), degree=spec.get("degree", 3),
                                      prob=prob))
        elif kind == "roll":
            out.append(RandRolld(keys, prob=prob, axes=spec["axes"]))
    return out


class RandRolld(RandomizableTransform, MapTransform):
    """Periodic shift along the given spatial axes by a random amount each (MONAI has no such transform)."""

    def __init__(self, keys, prob: float, axes):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.axes, self.shifts = tuple(axes), ()

    def __call__(self, sample):
        out = dict(sample)
        shape = out[self.first_key(out)].shape[1:]
        self.randomize(None)
        self.shifts = tuple(int(self.R.randint(shape[a])) for a in self.axes)
        if not self._do_transform:
            return out
        for key in self.key_iterator(out):
            out[key] = torch.roll(torch.as_tensor(out[key]), shifts=self.shifts, dims=tuple(a + 1 for a in self.axes))
        return out


# --------------------------------------------------------------------------- batched, on the batch's device
class BatchAugment:
    """Applies the specs to a batch (B, C, *spatial) and its optional mask (B, 1, *spatial).

    Call as `augment(image, mask, generator, rows)`: `generator` is a CPU torch.Generator,
    `rows` the positions of this process's samples in the global batch (all of them in a single
    process). Random parameters are drawn for the global batch size, then the rows are taken.
    """

    def __init__(self, specs: list[dict]):
        self.specs = check_specs(list(specs))
        self._bias_basis: dict = {}

    def __bool__(self) -> bool:
        return bool(self.specs)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator,
                 rows: torch.Tensor, global_size: int):
        for spec in self.specs:
            n = global_size
            applies = (torch.rand(n, generator=generator) < spec["prob"])[rows]
            image, mask = getattr(self, "_" + spec["kind"])(spec, image, mask, applies, generator, n, rows)
        return image, mask

    # Each op draws its randoms for all n rows of the global batch (so the draw count, and every later
    # draw, is the same in every process), then applies rows `rows` where `applies`.
    @staticmethod
    def _select(applies: torch.Tensor, changed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        where = applies.to(original.device).view(-1, *([1] * (original.ndim - 1)))
        return torch.where(where, changed, original)

    def _flip(self, spec, image, mask, applies, generator, n, rows):
        dim = spec["axis"] + 2
        image = self._select(applies, image.flip(dim), image)
        if mask is not None:
            mask = self._select(applies, mask.flip(dim), mask)
        return image, mask

    def _rot90(self, spec, image, mask, applies, generator, n, rows):
        axes = tuple(a + 2 for a in spec.get("axes", (0, 1)))
        turns = torch.randint(1, 4, (n,), generator=generator)[rows]
        if image.shape[axes[0]] != image.shape[axes[1]]:
            raise ValueError(f"rot90 in a non-square plane {image.shape[axes[0]]}x{image.shape[axes[1]]} "
                             "would change the image shape; turn it off for this dataset")
        image, mask = image.clone(), mask.clone() if mask is not None else None
        for k in (1, 2, 3):  # each sample turned once, by its own k: only the chosen rows are touched
            chosen = (applies & (turns == k)).nonzero()[:, 0].to(image.device)
            if len(chosen):
                image[chosen] = torch.rot90(image[chosen], k, axes)
                if mask is not None:
                    mask[chosen] = torch.rot90(mask[chosen], k, axes)
        return image, mask

    def _roll(self, spec, image, mask, applies, generator, n, rows):
        for axis in spec["axes"]:
            dim, size = axis + 2, image.shape[axis + 2]
            shift = torch.randint(0, size, (n,), generator=generator)[rows] * applies
            # out[i] = x[(i - shift) % size], as torch.roll, with a different shift per sample
            index = (torch.arange(size)[None] - shift[:, None]) % size
            shape = [len(rows)] + [1] * (image.ndim - 1)
            shape[dim] = size
            index = index.view(shape).to(image.device)
            image = torch.gather(image, dim, index.expand_as(image))
            if mask is not None:
                mask = torch.gather(mask, dim, index.expand_as(mask))
        return image, mask

    def _affine(self, spec, image, mask, applies, generator, n, rows):
        dims = image.ndim - 2
        planes = list(itertools.combinations(range(dims), 2))
        rotate = np.resize(np.asarray(spec.get("rotate", 0.0), dtype=float).ravel()[:len(planes)], len(planes))
        angles = (torch.rand(n, len(planes), generator=generator) * 2 - 1) * torch.as_tensor(rotate)
        scales = 1 + (torch.rand(n, dims, generator=generator) * 2 - 1) * float(spec.get("scale", 0.0))
        angles, scales = angles[rows].double(), scales[rows].double()
        # the matrix in voxel units (about the centre), then to grid_sample's [-1, 1] coordinates
        matrix = torch.diag_embed(1.0 / scales)
        for p, (a, b) in enumerate(planes):
            turn = torch.eye(dims, dtype=torch.float64).repeat(len(rows), 1, 1)
            c, s = torch.cos(angles[:, p]), torch.sin(angles[:, p])
            turn[:, a, a], turn[:, a, b], turn[:, b, a], turn[:, b, b] = c, -s, s, c
            matrix = turn @ matrix
        half = torch.tensor([(size - 1) / 2 for size in image.shape[2:]], dtype=torch.float64)
        matrix = matrix / half[None, :, None] * half[None, None, :]
        # grid_sample orders coordinates last axis first
        matrix = matrix.flip(1).flip(2)
        theta = torch.cat([matrix, torch.zeros(len(rows), dims, 1, dtype=torch.float64)], 2)
        theta[~applies] = torch.cat([torch.eye(dims, dtype=torch.float64), torch.zeros(dims, 1, dtype=torch.float64)], 1)
        grid = F.affine_grid(theta.to(image.device, torch.float32), list(image.shape), align_corners=True)
        return self._resample(spec, image, mask, grid, applies)

    def _elastic(self, spec, image, mask, applies, generator, n, rows):
        dims, shape = image.ndim - 2, image.shape[2:]
        sigmas = spec["sigma"][0] + torch.rand(n, generator=generator) * (spec["sigma"][1] - spec["sigma"][0])
        magnitudes = spec["magnitude"][0] + torch.rand(n, generator=generator) * (spec["magnitude"][1] - spec["magnitude"][0])
        seeds = torch.randint(0, 2**62, (n,), generator=generator)
        identity = F.affine_grid(torch.eye(dims, dims + 1)[None].expand(len(rows), -1, -1).to(image.device),
                                 list(image.shape), align_corners=True)
        fields = []
        for i, row in enumerate(rows.tolist()):
            # MONAI's recipe: uniform noise per voxel, Gaussian-smoothed, times the magnitude (in voxels).
            local = torch.Generator(device=image.device).manual_seed(int(seeds[row]))
            noise = torch.rand((dims, *shape), generator=local, device=image.device) * 2 - 1
            smooth = GaussianFilter(dims, float(sigmas[row]), truncated=3.0, approx="sampled")(noise[None])[0]
            smooth = smooth * float(magnitudes[row])
            half = torch.tensor([(s - 1) / 2 for s in shape], device=image.device).view(dims, *([1] * dims))
            fields.append((smooth / half).flip(0).movedim(0, -1) * bool(applies[i]))
        return self._resample(spec, image, mask, identity + torch.stack(fields), applies)

    @staticmethod
    def _resample(spec, image, mask, grid, applies):
        padding = spec.get("padding", "zeros")
        out = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode=padding, align_corners=True)
        image = BatchAugment._select(applies, out, image)
        if mask is not None:
            moved = F.grid_sample(mask.float(), grid.float(), mode="nearest", padding_mode="zeros", align_corners=True)
            mask = BatchAugment._select(applies, moved.to(mask.dtype), mask)
        return image, mask

    def _stretch(self, spec, image, mask, applies, generator, n, rows):
        """Resample a 1D signal at (i - shift) / (1 + u): peaks move as under a gain and offset drift, and
        values outside the signal are zero (no counts)."""
        stretch = (1 + (torch.rand(n, generator=generator) * 2 - 1) * spec["factor"])[rows]
        shift = ((torch.rand(n, generator=generator) * 2 - 1) * spec["offset"])[rows]
        length = image.shape[-1]
        cells = torch.arange(length, dtype=torch.float32)
        where = (cells[None] - shift[:, None]) / stretch[:, None]
        where = torch.where(applies[:, None], where, cells[None]).clamp(-1, length).to(image.device)
        lower = where.floor().clamp(-1, length - 1)
        weight = (where - lower).to(image.dtype)[:, None]
        padded = F.pad(image, (1, 1))  # index -1 and length read the zero padding
        left = torch.gather(padded, 2, (lower.long() + 1)[:, None].expand(-1, image.shape[1], -1))
        right = torch.gather(padded, 2, (lower.long() + 2).clamp(max=length + 1)[:, None].expand(-1, image.shape[1], -1))
        return left * (1 - weight) + right * weight, mask

    def _scale_intensity(self, spec, image, mask, applies, generator, n, rows):
        factor = (1 + (torch.rand(n, generator=generator) * 2 - 1) * spec["factor"])[rows]
        return image * torch.where(applies, factor, 1.0).to(image).view(-1, *[1] * (image.ndim - 1)), mask

    def _shift_intensity(self, spec, image, mask, applies, generator, n, rows):
        offset = ((torch.rand(n, generator=generator) * 2 - 1) * spec["offset"])[rows]
        return image + torch.where(applies, offset, 0.0).to(image).view(-1, *[1] * (image.ndim - 1)), mask

    def _gamma(self, spec, image, mask, applies, generator, n, rows):
        low, high = spec["gamma"]
        gamma = (low + torch.rand(n, generator=generator) * (high - low))[rows].to(image).view(-1, *[1] * (image.ndim - 1))
        flat = image.flatten(1)
        lo = flat.amin(1).view_as(gamma)
        span = flat.amax(1).view_as(gamma) - lo
        # MONAI's AdjustContrast: on the sample's own range, so the minimum and maximum stay put
        curved = ((image - lo) / (span + 1e-7)).clamp_min(0) ** gamma * span + lo
        return self._select(applies, curved, image), mask

    def _noise(self, spec, image, mask, applies, generator, n, rows):
        std = (torch.rand(n, generator=generator) * spec["std"])[rows]
        if spec.get("fixed"):
            std = torch.full_like(std, float(spec["std"]))
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        local = torch.Generator(device=image.device).manual_seed(seed)
        # drawn for the global batch so a sample's noise does not depend on how many processes share it
        field = torch.randn((n, *image.shape[1:]), generator=local, device=image.device, dtype=image.dtype)
        field = field[rows.to(image.device)] * std.to(image).view(-1, *[1] * (image.ndim - 1)) + spec.get("mean", 0.0)
        return self._select(applies, image + field, image), mask

    def _bias_field(self, spec, image, mask, applies, generator, n, rows):
        degree = spec.get("degree", 3)
        basis = self._legendre_basis(tuple(image.shape[2:]), degree, image.device)
        low, high = spec["coeff"]
        coeffs = (low + torch.rand(n, basis.shape[0], generator=generator) * (high - low))[rows].to(basis)
        field = torch.exp(torch.einsum("bt,t...->b...", coeffs, basis))[:, None]
        return self._select(applies, image * field.to(image.dtype), image), mask

    def _legendre_basis(self, shape: tuple, degree: int, device) -> torch.Tensor:
        """Products of Legendre polynomials of total degree <= degree over [-1, 1]^d (MONAI's RandBiasField)."""
        key = (shape, degree, str(device))
        if key not in self._bias_basis:
            from numpy.polynomial.legendre import legval

            axes = [np.linspace(-1, 1, s) for s in shape]
            terms = []
            for orders in itertools.product(range(degree + 1), repeat=len(shape)):
                if sum(orders) <= degree:
                    factors = [legval(x, np.eye(degree + 1)[o]) for x, o in zip(axes, orders)]
                    terms.append(np.einsum(",".join("ijk"[:len(shape)]) + "->" + "ijk"[:len(shape)], *factors)
                                 if len(shape) > 1 else factors[0])
            self._bias_basis[key] = torch.as_tensor(np.stack(terms), dtype=torch.float32, device=device)
        return self._bias_basis[key]
