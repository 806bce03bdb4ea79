"""Load, complete and validate sciconv's configuration.

Two kinds of file: the global `config/config.yaml` and one YAML per dataset.
Both are checked against JSON schemas (draft 2020-12) kept in
`workflow/schemas/`; the domain-specific sections of a dataset (source,
preprocess, augment, baseline) take their schema from the domain module, so a
new domain brings its own keys without touching the shared schema.

Defaults live in the schemas (`default:`) and in the domain module, never in
the code that reads the config: what a user does not write is filled in here,
once, and every step sees the same resolved dictionary.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sciconv.domains import available_domains, get_domain

GLOBAL_CONFIG_PATH = Path("config/config.yaml")
DOMAIN_SECTIONS = ("source", "preprocess", "augment", "baseline")


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid; the message says what to change."""


def load_schema(name: str) -> dict:
    """Read `workflow/schemas/<name>.schema.yaml`.

    From a source checkout (editable install) the file is read in place; a
    wheel carries the same files as the package data `sciconv.schemas`.
    """
    in_tree = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / f"{name}.schema.yaml"
    if in_tree.is_file():
        return yaml.safe_load(in_tree.read_text())
    return yaml.safe_load(resources.files("sciconv.schemas").joinpath(f"{name}.schema.yaml").read_text())


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names one key twice; YAML itself would keep the last silently."""


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in one mapping: of two values a user typed, the
    earlier one would be dropped without a word."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(None, None, f"key {key!r} appears twice in one mapping: first on line "
                                        f"{seen[key] + 1}, again on line {key_node.start_mark.line + 1}; keep one",
                                        key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.load(path.read_text(), Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as err:
        raise ConfigError(f"{path}: {err.problem}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def schema_defaults(schema: dict) -> dict:
    """The nested dictionary of every `default:` an object schema declares."""
    out: dict[str, Any] = {}
    for key, sub in schema.get("properties", {}).items():
        if "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        elif sub.get("type") == "object" and "properties" in sub:
            nested = schema_defaults(sub)
            if nested:
                out[key] = nested
    return out


def deep_merge(base: dict, override: dict) -> dict:
    """Return base updated by override, recursing into mappings (lists are replaced whole)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _describe(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    validator = error.validator
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"{path}." if path != "(top level)" else ""
        return (f"key {', '.join(where + k for k in extra)} is not allowed; "
                f"allowed keys here: {', '.join(allowed)}")
    if validator == "enum":
        return f"key {path}: {error.instance!r} is not one of the allowed values: {', '.join(map(str, error.validator_value))}"
    if validator == "required":
        return f"key {path}: {error.message}"
    return f"key {path}: {error.message}"


def validate(instance: dict, schema: dict, source: Path | str) -> None:
    """Raise ConfigError listing every violation, each naming the file and the key path."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(f"{source}: invalid configuration\n{lines}")


def load_global(path: Path | str = GLOBAL_CONFIG_PATH, overrides: dict | None = None) -> dict:
    """The validated global config with defaults filled in (MLFLOW_TRACKING_URI in the environment wins
    over mlflow_tracking_uri, decided in sciconv.tracking.tracking_uri)."""
    path = Path(path)
    if not path.exists() and overrides is None:
        raise ConfigError(f"{path}: file not found (run from the project folder, or pass --config)")
    schema = load_schema("config")
    raw = read_yaml(path) if path.exists() else {}
    cfg = deep_merge(deep_merge(schema_defaults(schema), raw), overrides or {})
    validate(cfg, schema, path)
    return cfg


def dataset_schema(domain: str | None, source_kind: str | None = "simulate") -> dict:
    """The dataset schema with the named domain's own sections plugged in.

    A simulated source takes the domain's simulator schema; `kind: files` the shared one.
    """
    schema = load_schema("dataset")
    props = schema["properties"]
    props["domain"] = {**props["domain"], "enum": available_domains()}
    if domain in available_domains():
        for section in DOMAIN_SECTIONS:
            props[section] = get_domain(domain).schemas[section]
    if source_kind == "files":
        props["source"] = schema["$defs"]["files_source"]
    elif "properties" in props["source"]:
        # so that a wrong kind is told both choices, not only the simulator's
        props["source"] = {**props["source"], "properties": {**props["source"]["properties"],
                                                             "kind": {"type": "string", "enum": ["simulate", "files"]}}}
    return schema


@dataclass(frozen=True)
class DatasetConfig:
    """A dataset's resolved configuration and where it came from."""

    name: str
    path: Path
    cfg: dict
    global_cfg: dict
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE given on the command line, in order
    # what the YAML and the --set overrides wrote, before defaults: the keys the plan may not change
    raw: dict = field(default_factory=dict, compare=False)

    @property
    def results_dir(self) -> Path:
        return Path(self.global_cfg["results_dir"]) / self.name

    @property
    def domain(self):
        return get_domain(self.cfg["domain"])

    @property
    def task(self):
        """The task's class (sciconv.tasks.base.Task): every difference between tasks asks it."""
        from sciconv.tasks import task_for

        return task_for(self.cfg["task"])

    @property
    def class_names(self) -> list[str]:
        """The names of the outputs, decided here alone: the classes (the domain's for this task, or the
        YAML's `classes`), or for a task named by targets the YAML's `targets`, else the domain's."""
        return output_names(self.cfg, self.domain, self.task)

    @property
    def cv_folds(self) -> list[int]:
        """The cross-validation folds this dataset trains and ensembles (split.k_folds without split.fold);
        empty where it trains one model."""
        split = self.cfg["split"]
        return list(range(split["k_folds"])) if split["k_folds"] and split["fold"] is None else []

    @property
    def seed(self) -> int:
        return int(self.global_cfg["seed"])


def resolve_dataset_path(name_or_path: str, global_cfg: dict) -> Path:
    """A dataset name maps to <datasets_dir>/<name>.yaml; anything ending in .yaml/.yml is a path."""
    if name_or_path.endswith((".yaml", ".yml")):
        return Path(name_or_path)
    return Path(global_cfg["datasets_dir"]) / f"{name_or_path}.yaml"


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """--set train.epochs=3 --set model.channels=[8,16] -> {"train": {"epochs": 3}, "model": {"channels": [8, 16]}};
    values are read as YAML, so numbers, lists and booleans take their types."""
    nested: dict = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item}: expected KEY=VALUE with a dotted key, e.g. --set train.epochs=3")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({err})") from err
        *parents, leaf = key.strip().split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {item}: {part} was given a value by an earlier --set")
        target[leaf] = value
    return nested


def load_dataset(name_or_path: str, global_cfg: dict, overrides: list[str] | tuple[str, ...] = ()) -> DatasetConfig:
    """The dataset's validated config, defaults filled in; `overrides` (--set KEY=VALUE) apply on top of
    the YAML and are validated with it, so a wrong key names itself."""
    path = resolve_dataset_path(name_or_path, global_cfg)
    raw = deep_merge(read_yaml(path), parse_overrides(overrides))
    if overrides:
        path_label = f"{path} (with --set {' '.join(overrides)})"
    else:
        path_label = path
    domain = raw.get("domain")
    if domain not in available_domains():
        # Validate first against the bare schema so the error names the key and the choices.
        validate(raw, dataset_schema(None), path_label)
    module = get_domain(domain)
    task = raw.get("task")
    source = raw.get("source")
    schema = dataset_schema(domain, source.get("kind") if isinstance(source, dict) else None)
    cfg = deep_merge(schema_defaults(schema), module.defaults)
    cfg = deep_merge(cfg, raw)
    validate(cfg, schema, path_label)
    if task not in module.tasks:
        raise ConfigError(f"{path}: key task: domain {domain!r} supports {', '.join(module.tasks)}, not {task!r}")
    if cfg["source"]["kind"] == "simulate" and not module.can_simulate:
        raise ConfigError(f"{path}: key source.kind: domain {domain!r} has no simulator; use kind: files")
    labels_from_layout(path, cfg)
    from sciconv.tasks import task_for

    if "name" not in (raw.get("model") or {}) and "name" not in module.defaults.get("model", {}):
        cfg["model"]["name"] = task_for(task).default_network
    check_output_names(path, cfg, module, task_for(task))
    ds = DatasetConfig(name=path.stem, path=path, cfg=cfg, global_cfg=global_cfg, overrides=tuple(overrides), raw=raw)
    if ds.task.dense:
        check_segmentation_labels(path, cfg, ds.class_names)
    check_network_for_task(path, cfg)
    if cfg["explain"]["method"] is None:  # each task's own default saliency method
        cfg["explain"]["method"] = ds.task.explain_methods[0]
    resolve_tta(path, cfg, ds)
    check_folds(path, cfg["split"])
    problem = ds.task.check_config(cfg)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    for key, problem in ds.domain.check_config(cfg):
        raise ConfigError(f"{path}: key {key}: {problem}")
    return ds


def check_folds(path: Path, split: dict) -> None:
    if split["fold"] is not None and not split["k_folds"]:
        raise ConfigError(f"{path}: key split.fold: {split['fold']} needs split.k_folds (how many folds there are)")
    if split["fold"] is not None and split["fold"] >= split["k_folds"]:
        raise ConfigError(f"{path}: key split.fold: {split['fold']} is out of range: the folds of split.k_folds "
                          f"{split['k_folds']} are 0 to {split['k_folds'] - 1}; leave fold out to train them all")


def resolve_tta(path: Path, cfg: dict, ds) -> None:
    """evaluate.tta and tta_axes as inference uses them: the task's default where tta is null (mirror when
    axes are named), the axes the domain's augmentation flips where tta_axes is null, and [] for none."""
    evaluate = cfg["evaluate"]
    written = evaluate["tta"]
    if evaluate["tta"] is None:
        evaluate["tta"] = "mirror" if evaluate["tta_axes"] else ds.task.default_tta
    allowed = ds.domain.mirror_axes(cfg["augment"])
    if written == "mirror" and not allowed:
        raise ConfigError(f"{path}: key evaluate.tta: mirror needs an axis the {cfg['domain']} domain's "
                          "augmentation flips, and with these augment settings it flips none; set tta: none")
    if evaluate["tta"] == "none":
        evaluate["tta_axes"] = []
        return
    if evaluate["tta_axes"] is None:
        evaluate["tta_axes"] = list(allowed)
        return
    forbidden = sorted(set(evaluate["tta_axes"]) - set(allowed))
    if forbidden:
        raise ConfigError(f"{path}: key evaluate.tta_axes: axis {', '.join(map(str, forbidden))} is not one the "
                          f"{cfg['domain']} domain's augmentation flips (with these augment settings it flips "
                          f"{', '.join(map(str, allowed)) or 'none'}); a network never trained mirrored there "
                          "must not be averaged over that mirror; leave tta_axes out to take the allowed axes")


def labels_from_layout(path: Path, cfg: dict) -> None:
    """A layout that declares its labels (nnU-Net's dataset.json) fills classes and mask_values the
    YAML leaves out; ones the YAML writes must agree with it."""
    from sciconv.sources import SourceError, layout_labels

    try:
        declared = layout_labels(cfg, path)
    except SourceError as err:
        raise ConfigError(f"{path}: key source.path: {err}") from err
    if declared is None:
        return
    names, values, where = declared
    for key, wanted in (("classes", names), ("mask_values", values)):
        if cfg.get(key) is not None and list(cfg[key]) != wanted:
            raise ConfigError(f"{path}: key {key}: {cfg[key]} contradicts {where}, whose labels are "
                              + ", ".join(f"{n}={v}" for n, v in zip(names, values))
                              + f"; leave {key} out to take them from it")
        cfg[key] = wanted


def output_names(cfg: dict, domain, task) -> list[str]:
    if task.output_names == "targets":
        return list(cfg.get("targets") or domain.targets)
    return list(domain.class_names(task.name, cfg) or cfg.get("classes") or [])


def check_output_names(path: Path, cfg: dict, domain, task) -> None:
    """The outputs are named: targets for a regression, classes otherwise (by the domain or the YAML)."""
    if task.output_names == "targets":
        if not (cfg.get("targets") or domain.targets):
            raise ConfigError(f"{path}: key targets: {task.name} needs the names of the targets, "
                              "e.g. targets: [mass, age]")
        return
    fixed = domain.class_names(task.name, cfg)
    if fixed is None and not cfg.get("classes"):
        raise ConfigError(f"{path}: key classes: domain {domain.name!r} needs the list of class names "
                          "(background first for segmentation), e.g. classes: [background, cell]")
    if fixed is not None and cfg.get("classes") not in (None, fixed):
        raise ConfigError(f"{path}: key classes: domain {domain.name!r} fixes its classes: "
                          f"{', '.join(fixed)}; remove the key")


def check_network_for_task(path: Path, cfg: dict) -> None:
    """The network's kind fits the task, and encoder freezing has an encoder to freeze: before any job."""
    from sciconv.networks import SEGMENTERS, is_segmenter
    from sciconv.tasks import task_for

    name, task = cfg["model"]["name"], task_for(cfg["task"])
    dense = task.dense
    if dense and not is_segmenter(name):
        raise ConfigError(f"{path}: key model.name: {name!r} is an image-level network; "
                          f"{task.name} needs one of {', '.join(SEGMENTERS)}")
    if not dense and is_segmenter(name):
        raise ConfigError(f"{path}: key model.name: {name!r} is a segmenter; "
                          f"{task.name} needs an image-level network such as densenet121 or resnet18")
    if cfg["init_from"] and cfg["train"]["freeze_encoder_epochs"] and is_segmenter(name):
        raise ConfigError(f"{path}: key train.freeze_encoder_epochs: freezing applies to image-level networks; "
                          "set it to 0 for a segmenter")
    size = task.configured_input_size(cfg)
    if size:
        # the check sciconv inspect and train make, now before any job: a patch the network cannot
        # take stops the workflow while it loads, not after ingest, split and preprocess have run
        from sciconv.errors import ModelConfigError
        from sciconv.networks import check_input_size

        try:
            check_input_size({**cfg["model"], "spatial_dims": len(size)}, size)
        except ModelConfigError as err:
            raise ConfigError(f"{path}: key train.patch_size: {err}") from err


def check_segmentation_labels(path: Path, cfg: dict, class_names: list[str]) -> None:
    """mask_values gives one value per class; regions name only declared foreground classes."""
    values = cfg.get("mask_values")
    if values is not None and len(values) != len(class_names):
        raise ConfigError(f"{path}: key mask_values: {len(values)} values for {len(class_names)} classes "
                          f"({', '.join(class_names)}); give one stored value per class, in class order")
    for region, members in (cfg.get("regions") or {}).items():
        unknown = [m for m in members if m not in class_names[1:]]
        if unknown:
            raise ConfigError(f"{path}: key regions.{region}: {', '.join(unknown)} not among the foreground "
                              f"classes {', '.join(class_names[1:])}")


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, the form MLflow params take."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
