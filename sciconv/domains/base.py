"""The domain contract, typed: what a domain module declares, with every optional part's default
stated once, and the classical baseline's result typed by what the tasks do with it."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np


@dataclass(frozen=True)
class Baseline:
    """One sample's result of a domain's classical method. A segmentation is scored on `mask`; a
    classifier ranks by `score` (a detector's response, higher means positive) when the method has
    one, else fits a logistic regression from `features`; a regressor fits a ridge from `features`."""

    mask: np.ndarray | None = None
    score: float | None = None
    features: np.ndarray | None = None


class BaselineError(ValueError):
    """A domain's baseline gave no result of the kind the task needs."""


class Domain:
    """A domain module behind explicit attributes. Required in the module: TASKS, SCHEMAS, DEFAULTS,
    preprocess, input_channels, augment_specs, baseline (returning a Baseline). Optional, with these
    defaults: CLASS_NAMES (None: the dataset's `classes:`; a list for every task, or a dict per task),
    TARGETS (regression outputs; none), simulate (no simulator), SAMPLE_COUNT_KEY (the source key of the
    simulator's sample count; none), DISPLAY_CHANNEL (the channel saliency montages are drawn over; the
    first), NORMALISATION (how intensities are normalised, reported in plan.json), SPACING_KEY (the
preprocess key of the target voxel size; when the YAML leaves it null the planner chooses it),
SPATIAL_DIMS (the dimensionalities its samples may have; 2D images and 3D volumes; (1,) for signals)."""

    def __init__(self, name: str, module: ModuleType):
        self.name, self.module = name, module
        self.tasks: tuple[str, ...] = tuple(module.TASKS)
        self.schemas: dict = module.SCHEMAS
        self.defaults: dict = module.DEFAULTS
        fixed = getattr(module, "CLASS_NAMES", None)
        self._class_names = fixed if isinstance(fixed, dict) else {task: fixed for task in self.tasks}
        self.targets: tuple[str, ...] = tuple(getattr(module, "TARGETS", ()) or ())
        self.sample_count_key: str | None = getattr(module, "SAMPLE_COUNT_KEY", None)
        self.display_channel: str | None = getattr(module, "DISPLAY_CHANNEL", None)
        self.can_simulate = callable(getattr(module, "simulate", None))
        self.normalisation: str = getattr(module, "NORMALISATION", "the domain's preprocess")
        self.spacing_key: str | None = getattr(module, "SPACING_KEY", None)
        self.spatial_dims: tuple[int, ...] = tuple(getattr(module, "SPATIAL_DIMS", (2, 3)))

    @property
    def signals(self) -> bool:
        """Its samples are 1D signals: a 2D array read for it is channels by length (io.as_signal)."""
        return self.spatial_dims == (1,)

    def dims_problem(self, image: np.ndarray) -> str | None:
        """Why a sample of this dimensionality is not one of this domain's, or None."""
        spatial = image.ndim - 1
        if spatial in self.spatial_dims:
            return None
        takes = " or ".join(f"{d}D" for d in self.spatial_dims)
        kind = "signal" if spatial == 1 else "image"
        return (f"a {spatial}D {kind} of shape {list(image.shape[1:])}; domain {self.name} takes {takes} "
                f"{'signals' if self.signals else 'images'}")

    def class_names(self, task: str, cfg: dict | None = None) -> list[str] | None:
        """The classes the domain fixes for `task` (for this dataset's settings where the module's optional
        class_names_for(cfg, task) decides them), or None where the dataset declares them."""
        chosen = getattr(self.module, "class_names_for", None)
        if chosen is not None and cfg is not None:
            return list(chosen(cfg, task))
        names = self._class_names.get(task)
        return list(names) if names is not None else None

    def simulate(self, source: dict, out_dir, seed: int, progress=None) -> list[dict]:
        if not self.can_simulate:
            raise ValueError(f"domain {self.name!r} has no simulator; use source.kind: files")
        return self.module.simulate(source, out_dir, seed, progress=progress)

    def preprocess(self, image: np.ndarray, meta: dict, params: dict, mask: np.ndarray | None = None):
        return self.module.preprocess(image, meta, params, mask=mask)

    def input_channels(self, cfg: dict) -> int:
        return self.module.input_channels(cfg)

    def augment_specs(self, params: dict) -> list[dict]:
        return self.module.augment_specs(params)

    def mirror_axes(self, augment_params: dict) -> tuple[int, ...]:
        """The spatial axes the domain's augmentation flips with these settings: the mirrorings the network
        learnt to be indifferent to, so the only ones test-time mirroring may use (a light-cone's line of
        sight and a mammogram's left-right are never among them)."""
        return tuple(sorted({int(spec["axis"]) for spec in self.augment_specs(augment_params)
                             if spec["kind"] == "flip"}))

    def check_config(self, cfg: dict) -> list[tuple[str, str]]:
        """(key, problem) pairs where the domain's settings contradict each other or the dataset's
        classes and targets; the module's optional check_config, none by default."""
        check = getattr(self.module, "check_config", None)
        return list(check(cfg)) if check else []

    def baseline_learners(self, cfg: dict, task: str) -> dict:
        """Classical models the domain fits on its baseline features beside the task's own (named, each
        reported as baseline_<name>_*); the module's optional baseline_learners, none by default."""
        learners = getattr(self.module, "baseline_learners", None)
        return learners(cfg, task) if learners else {}

    def baseline(self, image: np.ndarray, attrs: dict, cfg: dict, needs: str) -> Baseline:
        """The classical result for one sample; `needs` ('mask', 'score or features', 'features') is what
        the task will read, checked here so a domain that cannot serve a task says so by name."""
        result = self.module.baseline(image, attrs, cfg)
        if not isinstance(result, Baseline):
            raise BaselineError(f"domain {self.name}'s baseline returned {type(result).__name__}, not a Baseline")
        if not any(getattr(result, kind) is not None for kind in needs.split(" or ")):
            raise BaselineError(f"domain {self.name}'s baseline gives no {needs} for task {cfg['task']}")
        return result
