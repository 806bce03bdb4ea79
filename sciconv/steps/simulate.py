"""simulate: the domain's simulator writes raw files in the domain's real format, plus a manifest."""

from __future__ import annotations

import csv
import io

from sciconv.config import ConfigError, DatasetConfig
from sciconv.paths import DatasetPaths
from sciconv.runtime import Progress, atomic_write_text, derive_seed, log


def run(ds: DatasetConfig) -> None:
    source = ds.cfg["source"]
    if source["kind"] != "simulate":
        raise ConfigError(f"{ds.path}: key source.kind: {source['kind']!r} datasets are read from their own files, "
                          f"not simulated; run `sciconv ingest {ds.name}` (or `sciconv run {ds.name}`, which "
                          "skips simulate for them)")
    paths = DatasetPaths(ds.results_dir)
    n = source.get(ds.domain.sample_count_key) if ds.domain.sample_count_key else None
    log.info("simulating %s samples of domain %s into %s", n, ds.cfg["domain"], paths.raw)
    rows = ds.domain.simulate(source, paths.raw, derive_seed(ds.seed, ds.name, "simulate"),
                              progress=Progress("simulate", n or 0))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    # The manifest is written last and atomically: its presence means every raw file is complete.
    atomic_write_text(paths.manifest, buffer.getvalue())
    log.info("wrote %d samples and %s", len(rows), paths.manifest)
