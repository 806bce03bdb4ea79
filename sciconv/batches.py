"""Training batches: cached samples -> an epoch's plan -> crops -> batched augmentation, on the training device.

The deterministic preprocessing already ran (preprocessed.h5); what is left per step is choosing
samples, cropping patches and random augmentation. All of it runs here, without a DataLoader:
the samples sit in one cache (GPU memory when they fit, else pinned host memory, else plain host
memory; `train.cache`), a batch is gathered with one indexing op (whole images) or one slice per
patch (crops), and BatchAugment transforms the whole batch at once on the device. There is nothing
left for worker processes to hide, so none are started.

Randomness: one CPU generator per epoch, seeded by the training loop from (seed, epoch), draws the
sample order, the crops and every augmentation parameter for the *global* batch. A data-parallel
process takes its rows (rank, rank + world, ...) of each global batch, so N processes train on
exactly the samples one process would, and a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from sciconv.augment import BatchAugment
from sciconv.runtime import log

CACHE_CHOICES = ("auto", "device", "pinned", "host", "store")
MAX_CENTRES_PER_GROUP = 16384  # a uniform subset of candidate crop centres: enough, and memory stays bounded


def choose_cache(requested: str, nbytes: int, device: torch.device) -> str:
    """Where the training samples live: 'device' (GPU memory), 'pinned' or 'host' memory, or 'store'
    (left in preprocessed.h5, read per batch through a bounded cache)."""
    if requested != "auto":
        return requested if device.type == "cuda" or requested in ("host", "store") else "host"
    import psutil

    fits_in_memory = nbytes <= 0.5 * psutil.virtual_memory().available
    if device.type != "cuda":
        return "host" if fits_in_memory else "store"
    free, _ = torch.cuda.mem_get_info(device)
    if nbytes <= 0.4 * free:  # the rest is for the network's activations and cuDNN's workspaces
        return "device"
    return "pinned" if fits_in_memory else "store"


def store_cache_bytes() -> int:
    """The bounded cache of whole samples read from the store: a tenth of the free memory."""
    import psutil

    return int(0.1 * psutil.virtual_memory().available)


def pad_to(array: np.ndarray, size) -> np.ndarray:
    """Pad the spatial axes (after the channel axis) symmetrically with zeros up to at least `size` (MONAI's SpatialPad)."""
    from monai.transforms import SpatialPad

    if all(s >= r for s, r in zip(array.shape[1:], size)):
        return array
    return np.asarray(SpatialPad(spatial_size=list(size))(array)).astype(array.dtype)


class Crops:
    """Random crops of `size`, centred on a voxel of a group drawn in the given ratios (MONAI's
    RandCropByLabelClasses / RandCropByPosNegLabel rules: a group absent from an image is skipped,
    and a centre too near the border is moved inward so the crop stays inside)."""

    def __init__(self, size, centres: list[list[np.ndarray]], shapes: list[tuple], ratios):
        self.size = list(size)
        self.centres, self.shapes = centres, shapes
        self.ratios = np.asarray(ratios, dtype=float)

    @classmethod
    def from_groups(cls, size, groups_per_image: list[list[np.ndarray]], ratios, seed: int = 0) -> "Crops":
        """groups_per_image[i][g]: a boolean array over image i's spatial grid, True where group g may centre a crop."""
        rng = np.random.default_rng(seed)
        centres, shapes = [], []
        for groups in groups_per_image:
            shapes.append(groups[0].shape)
            per_image = []
            for where in groups:
                flat = np.flatnonzero(where).astype(np.int64)
                if len(flat) > MAX_CENTRES_PER_GROUP:
                    flat = np.sort(rng.choice(flat, MAX_CENTRES_PER_GROUP, replace=False))
                per_image.append(flat)
            centres.append(per_image)
        return cls(size, centres, shapes, ratios)

    def draw(self, images: np.ndarray, generator: torch.Generator) -> list[tuple[int, ...]]:
        """The start corner of one crop for each entry of `images` (image indices), two uniform draws each."""
        u = torch.rand(len(images), 2, generator=generator, dtype=torch.float64).numpy()
        starts = []
        for (u_group, u_centre), i in zip(u, images):
            counts = np.array([len(c) for c in self.centres[i]])
            weights = np.where(counts > 0, self.ratios[: len(counts)], 0.0)
            shape = self.shapes[i]
            if weights.sum() == 0:  # nothing to centre on: anywhere
                centre = [int(u_centre * (s - r + 1)) + r // 2 for s, r in zip(shape, self.size)]
            else:
                group = int(np.searchsorted(np.cumsum(weights) / weights.sum(), u_group, side="right"))
                group = min(group, len(counts) - 1)
                flat = self.centres[i][group][min(int(u_centre * counts[group]), counts[group] - 1)]
                centre = np.unravel_index(flat, shape)
            starts.append(tuple(int(np.clip(c - r // 2, 0, s - r)) for c, r, s in zip(centre, self.size, shape)))
        return starts


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def prefetched(batches, depth: int = 2):
    """Assemble the next batches in a background thread while the model trains on the current one.

    Torch releases the GIL in its ops, so on CPU the augmentation overlaps the network's compute;
    on a GPU both threads queue kernels on the same stream, in order. MONAI's ThreadBuffer does the
    same, but an exception in its thread silently ends the epoch early; here it is raised in the
    training loop.
    """
    ready: queue.Queue = queue.Queue(depth)
    stop, finished = threading.Event(), object()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in batches:
                if not offer(item):
                    return
            offer(finished)
        except BaseException as err:  # noqa: BLE001 - handed to the training loop, which raises it
            offer(_Failed(err))

    thread = threading.Thread(target=work, name="sciconv-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is finished:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()  # a consumer that stops early (a benchmark's last step) lets the thread end
        thread.join()


def epoch_plan(n: int, batch_size: int, generator: torch.Generator, weights=None, drop_last: bool = False):
    """The epoch's global batches of sample indices: a permutation, or n weighted draws with replacement."""
    if weights is not None:
        order = torch.multinomial(torch.as_tensor(weights, dtype=torch.float64), n, replacement=True,
                                  generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    batches = list(torch.split(order, batch_size))
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class TrainBatches:
    """One epoch of (inputs, targets) batches on the device; call set_epoch(seed) before each epoch.

    images: per sample (C, *spatial) float32 arrays; masks: per sample (1, *spatial) or None;
    targets: (N, ...) array of labels or regression targets, or None (segmentation: the mask is the target).
    crops: Crops for patch training, else whole images (which must then share one shape).
    images_per_batch images are drawn per step, each giving crops_per_image samples.
    """

    def __init__(self, images: list[np.ndarray], masks, targets, images_per_batch: int, augment: BatchAugment,
                 device: torch.device, cache: str = "auto", crops: Crops | None = None, crops_per_image: int = 1,
                 weights=None, drop_last: bool = False, rank: int = 0, world: int = 1):
        self.device, self.augment, self.crops = device, augment, crops
        self.images_per_batch, self.crops_per_image = images_per_batch, crops_per_image
        self.weights, self.drop_last, self.rank, self.world = weights, drop_last, rank, world
        self.n = len(images)
        nbytes = sum(a.nbytes for a in images) + sum(m.nbytes for m in masks or [])
        # records loaded lazily (StoredArray) were left in the store because they do not fit in memory
        self.cache = "store" if images and not isinstance(images[0], np.ndarray) else choose_cache(cache, nbytes, device)
        log.info("training cache: %d samples, %.1f MB, in %s", self.n, nbytes / 1e6,
                 {"store": "preprocessed.h5 (a bounded cache in memory)"}.get(self.cache, f"{self.cache} memory"))
        place = self._placer()
        if self.cache == "store":
            self.images, self.masks = list(images), list(masks) if masks is not None else None
        elif crops is None:
            if len({a.shape for a in images}) > 1:
                raise ValueError("whole-image training needs images of one shape; set the domain's preprocessing "
                                 "so they are cropped or resized alike")
            self.images = place(np.stack(images))  # one tensor: a batch is one indexing op
            self.masks = place(np.stack(masks)) if masks is not None else None
        else:
            self.images = [place(a) for a in images]
            self.masks = [place(m) for m in masks] if masks is not None else None
        self.targets = torch.as_tensor(np.asarray(targets)) if targets is not None else None
        self.seed = 0

    def _placer(self):
        if self.cache == "device":
            return lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        if self.cache == "pinned":
            return lambda a: torch.from_numpy(np.ascontiguousarray(a)).pin_memory()
        return lambda a: torch.from_numpy(np.ascontiguousarray(a))

    def set_epoch(self, seed: int) -> None:
        self.seed = seed

    def _plan(self, generator):
        return epoch_plan(self.n, self.images_per_batch, generator, self.weights, self.drop_last)

    def __len__(self) -> int:
        return len(self._plan(torch.Generator().manual_seed(0)))

    def __iter__(self):
        return prefetched(self._batches())

    def _batches(self):
        generator = torch.Generator().manual_seed(self.seed)
        for batch in self._plan(generator):
            # the global batch's samples, and the rows of it this process trains on
            samples = np.repeat(batch.numpy(), self.crops_per_image)
            if len(samples) < self.world:  # a last batch too small to give every process a row: all skip it alike
                continue
            rows = torch.arange(len(samples))[self.rank::self.world]
            starts = self.crops.draw(samples, generator) if self.crops is not None else None
            image, mask = self._gather(samples[rows.numpy()], None if starts is None else [starts[r] for r in rows])
            if self.augment:
                image, mask = self.augment(image, mask, generator, rows, len(samples))
            target = mask if self.targets is None else self.targets[samples[rows.numpy()]].to(self.device, non_blocking=True)
            yield image, target

    def _gather(self, samples: np.ndarray, starts):
        if self.cache == "store":
            return self._gather_from_store(samples, starts)
        if starts is None:
            index = torch.as_tensor(samples, device=self.images.device)
            image = self.images[index]
            mask = self.masks[index] if self.masks is not None else None
        else:
            windows = [(slice(None),) + tuple(slice(s, s + r) for s, r in zip(start, self.crops.size))
                       for start in starts]
            image = torch.stack([self.images[i][w] for i, w in zip(samples, windows)])
            mask = (torch.stack([self.masks[i][w] for i, w in zip(samples, windows)])
                    if self.masks is not None else None)
        non_blocking = self.cache == "pinned"
        image = image.to(self.device, non_blocking=non_blocking)
        mask = mask.to(self.device, non_blocking=non_blocking) if mask is not None else None
        return image, mask

    def _gather_from_store(self, samples: np.ndarray, starts):
        """Whole samples through the bounded cache, or crops read straight from their HDF5 chunks."""
        def read(arrays):
            if arrays is None:
                return None
            if starts is None:
                parts = [np.asarray(arrays[i]) for i in samples]
            else:
                parts = [arrays[i][(slice(None),) + tuple(slice(s, s + r) for s, r in zip(start, self.crops.size))]
                         for i, start in zip(samples, starts)]
            return torch.from_numpy(np.stack(parts)).to(self.device, non_blocking=False)
        return read(self.images), read(self.masks)
