"""preprocess: ingested.h5 -> preprocessed.h5 with the domain's modality-aware preprocessing."""

from __future__ import annotations

from sciconv.config import ConfigError, DatasetConfig
from sciconv.paths import DatasetPaths
from sciconv.planning import target_spacing
from sciconv.runtime import Progress, log
from sciconv.store import Sample, StoreReader, StoreWriter


def planned_spacing(ds: DatasetConfig, source: StoreReader) -> dict:
    """The target spacing where the domain resamples and the YAML leaves it null: the planner's rule over
    every ingested sample's spacing (headers only, no pixel is read). It has to be chosen here, before
    resampling; the plan step reports it. {} where there is nothing to choose."""
    key = ds.domain.spacing_key
    if key is None or ds.cfg["preprocess"].get(key) is not None:
        return {}
    spacings = [(source.sample_attrs(i).get("meta") or {}).get("spacing") for i in source.ids]
    if not spacings or any(s is None for s in spacings):
        return {}
    dims = min(len(s) for s in spacings)
    value, reason = target_spacing([s[:dims] for s in spacings])
    return {f"preprocess.{key}": {"value": value, "reason": reason}}


def check_one_length(ds: DatasetConfig, first: tuple, sample, length: int) -> None:
    """Signals train whole, through a network built for one length (a linear head over the flattened
    features): signals of another length stop preprocessing, naming both and the key that fixes it."""
    if length != first[1]:
        raise ConfigError(f"{ds.path}: key preprocess.length: signal {sample.id} ({sample.attrs.get('source')}) "
                          f"has {length} bins and {first[0].id} ({first[0].attrs.get('source')}) {first[1]}; set "
                          "preprocess.length to rebin every signal to one length")


def run(ds: DatasetConfig) -> None:
    paths = DatasetPaths(ds.results_dir)
    with StoreReader(paths.ingested) as source:
        planned = planned_spacing(ds, source)
    params = dict(ds.cfg["preprocess"])
    for key, decision in planned.items():
        params[key.split(".", 1)[1]] = decision["value"]
        log.info("%s = %s: %s", key, decision["value"], decision["reason"])
    with StoreReader(paths.ingested) as source, StoreWriter(
            paths.preprocessed, domain=source.attrs["domain"], task=source.attrs["task"],
            class_names=source.class_names, dataset=ds.name, stage="preprocessed",
            preprocess=params, planned=planned, n_rejected=source.attrs.get("n_rejected", 0)) as out:
        progress = Progress("preprocess", len(source.ids))
        first_signal = None
        for done, sample in enumerate(source, start=1):  # streaming: one sample in memory at a time
            image, mask, extra = ds.domain.preprocess(sample.image, sample.attrs.get("meta", {}), params,
                                                      mask=sample.mask)
            if ds.domain.signals:
                first_signal = first_signal or (sample, image.shape[-1])
                check_one_length(ds, first_signal, sample, image.shape[-1])
            if mask is not None and mask.shape != image.shape[1:]:
                raise ValueError(f"domain {ds.cfg['domain']} returned a mask of shape {mask.shape} for an image "
                                 f"of shape {image.shape}; its preprocess must apply the same geometry to both")
            attrs = {k: v for k, v in sample.attrs.items() if k != "meta"}
            out.add(Sample(sample.id, image, mask, {**attrs, **extra}))
            progress(done)
    log.info("preprocessed %d samples into %s", out.count, paths.preprocessed)
