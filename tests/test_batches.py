"""Batched augmentation and training batches: what each kind keeps, that processes splitting a batch
see the samples one process would, and that the cache placements train alike."""

import shutil

import numpy as np
import pytest
import torch

from sciconv.augment import BatchAugment, monai_transforms

ALL_2D = [{"kind": "flip", "prob": 0.5, "axis": 0}, {"kind": "rot90", "prob": 0.5, "axes": [0, 1]},
          {"kind": "roll", "prob": 0.5, "axes": [0, 1]},
          {"kind": "affine", "prob": 0.7, "rotate": 0.3, "scale": 0.1, "padding": "border"},
          {"kind": "elastic", "prob": 0.5, "sigma": [2, 3], "magnitude": [1, 3], "spatial_dims": 2},
          {"kind": "scale_intensity", "prob": 0.5, "factor": 0.2}, {"kind": "shift_intensity", "prob": 0.5, "offset": 0.2},
          {"kind": "gamma", "prob": 0.5, "gamma": [0.7, 1.5]}, {"kind": "noise", "prob": 0.5, "std": 0.1},
          {"kind": "bias_field", "prob": 0.5, "coeff": [0.0, 0.3]}]


def batch(n=6, shape=(16, 16), seed=0):
    rng = np.random.default_rng(seed)
    mask = torch.from_numpy(rng.integers(0, 3, size=(n, 1, *shape)).astype(np.uint8))
    image = torch.from_numpy(rng.normal(size=(n, 2, *shape)).astype(np.float32)) + mask.float()
    return image, mask


@pytest.mark.parametrize("spec", ALL_2D, ids=lambda s: s["kind"])
def test_processes_splitting_a_batch_get_the_rows_one_process_would(spec):
    image, mask = batch()
    whole = BatchAugment([spec])(image, mask, torch.Generator().manual_seed(3), torch.arange(6), 6)
    for world in (2, 3):
        for rank in range(world):
            rows = torch.arange(6)[rank::world]
            part = BatchAugment([spec])(image[rows], mask[rows], torch.Generator().manual_seed(3), rows, 6)
            torch.testing.assert_close(part[0], whole[0][rows])
            torch.testing.assert_close(part[1], whole[1][rows])


@pytest.mark.parametrize("spec", ALL_2D, ids=lambda s: s["kind"])
def test_probability_zero_changes_nothing_and_one_changes_every_sample(spec):
    image, mask = batch()
    same = BatchAugment([spec | {"prob": 0.0}])(image, mask, torch.Generator().manual_seed(0), torch.arange(6), 6)
    torch.testing.assert_close(same[0], image)
    assert torch.equal(same[1], mask)
    changed = BatchAugment([spec | {"prob": 1.0}])(image, mask, torch.Generator().manual_seed(0), torch.arange(6), 6)
    assert changed[0].shape == image.shape and changed[1].dtype == mask.dtype
    assert all(not torch.allclose(changed[0][i], image[i]) for i in range(6))


@pytest.mark.parametrize("kind", ["flip", "rot90", "roll", "affine", "elastic"])
def test_spatial_kinds_move_the_mask_with_the_image(kind):
    spec = next(s for s in ALL_2D if s["kind"] == kind) | {"prob": 1.0}
    mask = torch.zeros(4, 1, 24, 24, dtype=torch.uint8)
    mask[:, :, 6:14, 8:18] = 2
    image = mask.float().repeat(1, 2, 1, 1) * 5.0
    out_image, out_mask = BatchAugment([spec])(image, mask, torch.Generator().manual_seed(1), torch.arange(4), 4)
    assert set(out_mask.unique().tolist()) <= {0, 2}
    # the bright image region and the mask still coincide (bilinear edges aside)
    inside = out_image[:, 0][out_mask[:, 0] == 2]
    assert inside.mean() > 4.0
    assert (out_image[:, 0][out_mask[:, 0] == 0] > 2.5).float().mean() < 0.05


def test_intensity_kinds_leave_the_mask_alone_and_gamma_keeps_the_range():
    image, mask = batch()
    specs = [s | {"prob": 1.0} for s in ALL_2D if s["kind"] in ("gamma",)]
    out, out_mask = BatchAugment(specs)(image, mask, torch.Generator().manual_seed(0), torch.arange(6), 6)
    assert torch.equal(out_mask, mask)
    torch.testing.assert_close(out.flatten(1).amin(1), image.flatten(1).amin(1))
    torch.testing.assert_close(out.flatten(1).amax(1), image.flatten(1).amax(1), rtol=1e-4, atol=1e-4)


def test_affine_in_3d_keeps_a_centred_ball_centred():
    grid = torch.stack(torch.meshgrid(*[torch.arange(20.0)] * 3, indexing="ij"))
    ball = ((grid - 9.5) ** 2).sum(0) < 36
    image = ball[None, None].float().repeat(3, 1, 1, 1, 1)
    spec = {"kind": "affine", "prob": 1.0, "rotate": 0.5, "scale": 0.1}
    out, _ = BatchAugment([spec])(image, None, torch.Generator().manual_seed(0), torch.arange(3), 3)
    for sample in out[:, 0]:
        weights = sample / sample.sum()
        centre = (grid * weights).sum(dim=(1, 2, 3))
        torch.testing.assert_close(centre, torch.full((3,), 9.5), atol=0.3, rtol=0)
        assert 0.75 < sample.sum() / ball.sum() < 1.4  # scale within +-10% per axis


def test_every_kind_has_a_monai_counterpart_that_runs():
    from monai.transforms import Compose

    transforms = Compose(monai_transforms(ALL_2D, keys=("image", "mask")))
    image, mask = batch(n=1)
    out = transforms({"image": image[0], "mask": mask[0]})
    assert out["image"].shape == image[0].shape


def test_an_unknown_kind_is_an_error_naming_it():
    with pytest.raises(ValueError, match="blur"):
        BatchAugment([{"kind": "blur", "prob": 0.5}])


def _batches(images, specs, **kwargs):
    from sciconv.batches import TrainBatches

    return TrainBatches(images, None, np.arange(len(images)), 4, BatchAugment(specs), torch.device("cpu"), **kwargs)


def test_an_epoch_repeats_exactly_from_its_seed_and_covers_every_sample_once():
    images = [np.full((1, 8, 8), i, np.float32) for i in range(10)]
    batches = _batches(images, [{"kind": "flip", "prob": 0.5, "axis": 0}, {"kind": "noise", "prob": 0.5, "std": 0.1}])
    batches.set_epoch(5)
    first = list(batches)
    batches.set_epoch(5)
    again = list(batches)
    assert len(first) == len(batches) == 3  # 10 samples in batches of 4, the last one short
    for (a, ta), (b, tb) in zip(first, again):
        assert torch.equal(a, b) and torch.equal(ta, tb)
    assert sorted(torch.cat([t for _, t in first]).tolist()) == list(range(10))
    batches.set_epoch(6)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, batches))


def test_an_error_while_assembling_a_batch_reaches_the_training_loop():
    """The batches are assembled in a background thread; its failure must not just end the epoch early."""
    images = [np.zeros((1, 8, 6), np.float32) for _ in range(8)]
    batches = _batches(images, [{"kind": "rot90", "prob": 1.0, "axes": [0, 1]}])
    with pytest.raises(ValueError, match="non-square"):
        list(batches)


def test_training_from_the_store_repeats_training_from_memory(project, caplog):
    """train.cache store (a training set larger than memory) reads crops from the HDF5 chunks; same batches, same result."""
    from sciconv import config
    from sciconv.steps import ingest, plan, preprocess, simulate, split, train

    histories = {}
    for placement in ("host", "store"):
        ds = config.load_dataset("ccd_micro", config.load_global("config/config.yaml"))
        ds.cfg["train"]["cache"] = placement
        if placement == "host":
            for step in (simulate, ingest, split, preprocess, plan):
                step.run(ds)
        with caplog.at_level("INFO", logger="sciconv"):
            train.run(ds, device="cpu", threads=1)
        assert ("in preprocessed.h5" in caplog.text) == (placement == "store")
        caplog.clear()
        model = project / "results/ccd_micro/model"
        histories[placement] = torch.load(model / "model.pt", weights_only=True)["history"]
        shutil.rmtree(model)
    for host, store in zip(histories["host"], histories["store"]):
        assert store["train_loss"] == pytest.approx(host["train_loss"], rel=1e-6)
        assert store["val_dice_mean"] == pytest.approx(host["val_dice_mean"], abs=1e-6)


def test_a_stored_array_reads_slices_and_whole_arrays_like_the_array(tmp_path):
    from sciconv.store import ArrayCache, Sample, StoreReader, StoreWriter

    image = np.random.default_rng(0).normal(size=(2, 20, 30)).astype(np.float32)
    mask = np.random.default_rng(1).integers(0, 3, size=(20, 30)).astype(np.uint8)
    with StoreWriter(tmp_path / "s.h5", dataset="t", stage="preprocessed") as out:
        out.add(Sample("a", image, mask, {}))
    cache = ArrayCache(max_bytes=image.nbytes)  # room for one image only
    with StoreReader(tmp_path / "s.h5") as store:
        lazy_image = store.stored("a", "image", np.float32, cache)
        lazy_mask = store.stored("a", "mask", np.int64, cache)
    assert lazy_image.shape == image.shape and lazy_mask.shape == (1, 20, 30)
    np.testing.assert_array_equal(lazy_image[:, 3:9, 5:25], image[:, 3:9, 5:25])
    np.testing.assert_array_equal(lazy_mask[:, 3:9, 5:25], mask[None, 3:9, 5:25])
    np.testing.assert_array_equal(np.asarray(lazy_image), image)
    np.testing.assert_array_equal(np.asarray(lazy_mask), mask[None])
    assert cache.bytes <= cache.max_bytes  # the mask pushed the image out
