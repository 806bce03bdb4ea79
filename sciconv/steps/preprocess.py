"""preprocess: ingested.h5 -> preprocessed.h5 with the domain's modality-aware preprocessing."""

from __future__ import annotations

from sciconv.config import DatasetConfig
from sciconv.paths import DatasetPaths
from sciconv.runtime import Progress, log
from sciconv.store import Sample, StoreReader, StoreWriter


def run(ds: DatasetConfig) -> None:
    paths = DatasetPaths(ds.results_dir)
    params = ds.cfg["preprocess"]
    with StoreReader(paths.ingested) as source, StoreWriter(
            paths.preprocessed, domain=source.attrs["domain"], task=source.attrs["task"],
            class_names=source.class_names, dataset=ds.name, stage="preprocessed",
            preprocess=params, n_rejected=source.attrs.get("n_rejected", 0)) as out:
        progress = Progress("preprocess", len(source.ids))
        for done, sample in enumerate(source, start=1):  # streaming: one sample in memory at a time
            image, mask, extra = ds.domain.preprocess(sample.image, sample.attrs.get("meta", {}), params,
                                                      mask=sample.mask)
            if mask is not None and mask.shape != image.shape[1:]:
                raise ValueError(f"domain {ds.cfg['domain']} returned a mask of shape {mask.shape} for an image "
                                 f"of shape {image.shape}; its preprocess must apply the same geometry to both")
            attrs = {k: v for k, v in sample.attrs.items() if k != "meta"}
            out.add(Sample(sample.id, image, mask, {**attrs, **extra}))
            progress(done)
    log.info("preprocessed %d samples into %s", out.count, paths.preprocessed)
