"""Built-in domains, one module each, reached through sciconv.domains.base.Domain.

A domain module provides, and is the only place that knows:
  TASKS, CLASS_NAMES      what it can be trained for and the mask/label classes (None: from the YAML's `classes`)
  SCHEMAS                 JSON schemas of its source, preprocess, augment and baseline sections
  DEFAULTS                its defaults for any dataset section (model, train, ...)
  simulate(cfg, out_dir, seed) -> list of manifest rows
  preprocess(image, meta, params, mask=None) -> (image, mask, attrs)   the mask follows any crop or resize
  input_channels(cfg) -> channels the preprocessed image has (cfg: the resolved dataset config)
  augment_specs(params) -> list of augmentation specs (sciconv.augment: run batched on the device in
                          training, or as MONAI transforms by sciconv.augment.monai_transforms)
  baseline(image, attrs, cfg) -> Baseline(mask=..., score=..., features=...) of the classical method
optionally TARGETS, SAMPLE_COUNT_KEY, the source key giving the simulator's number of samples (for
progress), and DISPLAY_CHANNEL, the channel name saliency montages are drawn over (attrs["channels"]
names them); Domain states the defaults.

Adding a domain is adding a module here and a dataset YAML that names it.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from sciconv.domains.base import Domain


@cache
def available_domains() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name != "base")


@cache
def get_domain(name: str) -> Domain:
    if name not in available_domains():
        raise KeyError(f"unknown domain {name!r}; built-in domains: {', '.join(available_domains())}")
    return Domain(name, importlib.import_module(f"{__name__}.{name}"))
