"""inspect: every setting with its origin (yaml, plan, default), and the conv arithmetic of the network
as it will train (the plan applied), before any training."""

from __future__ import annotations

import json

from sciconv import models, planning
from sciconv.config import ConfigError, DatasetConfig
from sciconv.paths import DatasetPaths


def input_shape(ds: DatasetConfig) -> tuple[int, ...]:
    """(1, C, *size): the first preprocessed sample's channels and size where an image-level network
    takes whole samples and they are preprocessed, else the domain's channels and train.patch_size."""
    preprocessed = DatasetPaths(ds.results_dir).preprocessed
    if not ds.task.dense and not ds.task.configured_input_size(ds.cfg) and preprocessed.is_file():
        from sciconv.store import StoreReader

        with StoreReader(preprocessed) as store:
            if store.ids:
                return (1, *store.sample(store.ids[0]).image.shape)
    channels = ds.domain.input_channels(ds.cfg)
    if ds.domain.signals:  # a 1D network takes whole signals; their length is known once they are rebinned
        length = ds.cfg["preprocess"].get("length")
        if not length:
            raise ConfigError(f"{ds.path}: key preprocess.length: sciconv inspect needs the signals' length before "
                              f"they are preprocessed; set it, or run `sciconv preprocess {ds.name}` first")
        return (1, channels, length)
    return (1, channels, *ds.cfg["train"]["patch_size"])


def settings_table(ds: DatasetConfig, plan: dict | None) -> list[str]:
    """One line per preprocess, model and train setting: its value, where it came from and why."""
    where = DatasetPaths(ds.results_dir).plan
    lines = [f"settings of {ds.name} (origin yaml: written in {ds.path}; plan: {where}; default: schema or "
             "domain)" if plan else f"settings of {ds.name}: no plan yet ({where}: run `sciconv plan "
             f"{ds.name}`); keys the YAML leaves out show their defaults, which the plan may replace"]
    for key, value, origin, reason in planning.origins(ds, plan):
        text = json.dumps(value, separators=(",", ":"))
        lines.append(f"  {key:<34} {text if len(text) < 40 else text[:37] + '...':<40} {origin:<8} {reason}".rstrip())
    return lines


def run(ds: DatasetConfig) -> str:
    plan = planning.read_plan(DatasetPaths(ds.results_dir).plan)
    settings = settings_table(ds, plan)
    ds = planning.apply(ds, plan)
    shape = input_shape(ds)
    model_args = models.model_args(ds.cfg["model"], len(shape) - 2, shape[1], len(ds.class_names), input_size=shape[2:])
    models.check_input_size(model_args, shape[2:])
    net = models.build(model_args)
    rows, receptive_field, total = models.layer_table(net, shape)
    lines = [f"{ds.name}: {model_args['name']} on input {list(shape)} (batch, channels, *patch)",
             f"{'layer':<48} {'type':<18} {'output shape':<22} {'params':>9} {'RF':>5}"]
    for row in rows:
        if row.parameters or row.kind.startswith(("Conv", "ConvTranspose", "MaxPool")):
            lines.append(f"{row.name:<48} {row.kind:<18} {str(list(row.output_shape)):<22} "
                         f"{row.parameters:>9,} {row.receptive_field:>5}")
    lines += [f"receptive field: {receptive_field} pixels along each axis (deepest path)",
              f"parameters: {total:,}",
              input_size_rule(model_args)]
    text = "\n".join(settings + [""] + lines)
    print(text)
    return text


def input_size_rule(model_args: dict) -> str:
    if model_args["name"] == "convnet":
        return f"input size: exactly {model_args['input_size']} (a linear head over the flattened features)"
    factor = models.downsampling_factor(model_args)
    if factor == 1:
        return "input sizes: any, of at least 16 per axis (global pooling ends the network)"
    return f"input sizes must be multiples of {factor}"
