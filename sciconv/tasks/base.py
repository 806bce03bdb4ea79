"""The task contract: everything that differs between classification, segmentation and regression.

Two halves. The class-level facts and class methods (what names the outputs, the split's strata,
how masks are stored, what a sample adds to the class counts, the headline metric, which saliency
methods apply, what evaluate reads) are asked by the config checks, the data steps and the
workflow at parse time: they need no torch, so a task module imports torch only inside the
functions that train or infer. The instance methods (train_batches, loss, validate, finalize) are
the training loop's, and each task module's evaluate(...), explain(...) and predict_row(...) serve
the steps of those names. Outside sciconv/tasks/ only `task_for` names a task.
"""

from __future__ import annotations

import numpy as np


class Task:
    name = ""
    # the test metric the summary shows beside baseline_<metric>; the validation metric the best weights maximise
    headline_metric = ""
    selection_metric = ""
    # one output per pixel or voxel: a segmenter network, masks that are class maps
    dense = False
    # model.name where neither the YAML nor the domain names a network
    default_network = "densenet"
    # evaluate.tta where the YAML leaves it out
    default_tta = "none"
    # what a folds' ensemble averages (sciconv.inference.EnsembleNet): class probabilities, or outputs
    ensemble_average = "probabilities"
    # the dataset key that names the outputs: "classes" (class names) or "targets" (regression outputs)
    output_names = "classes"
    # config keys evaluate reads beyond sciconv.settings.DATASET_READS["evaluate"]
    evaluate_reads: tuple[str, ...] = ()
    # explain.method values the task honours; the first is its default
    explain_methods: tuple[str, ...] = ()
    # why the others are not honoured, said in the load-time error
    explain_note = ""
    # split.json's stratified_by: what the strata are
    stratified_by = "none"
    # what the task reads of the domain's classical Baseline
    baseline_needs = "features"
    # the keys `plan` may set where the YAML leaves them out (sciconv.planning); the built-in demos write
    # them all, so planning never moves their numbers (tests/test_planning.py)
    planned_keys: tuple[str, ...] = ("train.batch_size", "train.epochs")

    @classmethod
    def stratum_keys(cls, store) -> dict[str, str]:
        """The split's stratum of each sample id in an ingested store (read one sample at a time)."""
        return {sample_id: "all" for sample_id in store.ids}

    @classmethod
    def stored_mask(cls, mask: np.ndarray | None, cfg: dict) -> tuple[np.ndarray | None, str | None]:
        """The mask as ingest stores it, and a reason when it cannot be: an image-level task keeps only
        where the object is (any non-zero value), a dense task its classes."""
        if mask is None:
            return None, None
        return (mask > 0).astype(np.int64), None

    @classmethod
    def class_counts(cls, mask: np.ndarray | None, label: int | None, n_classes: int) -> np.ndarray | None:
        """What one sample adds to the dataset's per-class counts (ingest's check that every class has an
        example, the training statistics); None where the task has no classes."""
        counts = np.zeros(n_classes, dtype=np.int64)
        if label is not None:
            counts[int(label)] += 1
        return counts

    @classmethod
    def sample_target(cls, attrs: dict, names: list[str]) -> list[float] | None:
        """A sample's regression targets in `names` order (the fingerprint's statistics); None without."""
        return None

    @classmethod
    def count_name(cls) -> str:
        """The key of the per-class counts in the dataset statistics."""
        return "per_class"

    @classmethod
    def configured_input_size(cls, cfg: dict) -> list[int] | None:
        """The network input size the config fixes before any data is read (a training patch), or None
        when it comes from the data; the workflow checks it against the network when it loads."""
        return None

    @classmethod
    def plan(cls, ctx) -> None:
        """Set the planned keys the YAML leaves out on ctx.plan (a sciconv.planning.Context). Image-level
        tasks train on whole images (or on train.patch_size crops): the batch that fits the device's
        memory, and the epochs the time budget pays for at the measured step time."""
        from sciconv import models, planning

        if not any(ctx.plans(key) for key in cls.planned_keys):
            return
        size = cls.configured_input_size(ctx.ds.cfg) or np.median(ctx.shapes, 0).astype(int).tolist()
        model_args = models.model_args(ctx.ds.cfg["model"], len(size), ctx.in_channels, len(ctx.ds.class_names),
                                       input_size=size)
        if not cls.configured_input_size(ctx.ds.cfg):
            try:
                models.check_input_size(model_args, np.min(ctx.shapes, 0).tolist(), "the smallest training images")
            except models.ModelConfigError as err:
                raise planning.plan_error(ctx.ds, f"{err}; resize them (preprocess) to fit") from err
        _, epochs, _ = planning.schedule(ctx, model_args, list(size), ctx.n_train, 1.0)
        if ctx.plans("train.epochs"):
            planning.set_epochs(ctx, epochs)

    @classmethod
    def check_config(cls, cfg: dict) -> str | None:
        """A load-time problem with keys only this task reads, as 'key <path>: what to change', or None."""
        method = cfg["explain"]["method"]
        if cls.explain_methods and method not in cls.explain_methods:
            return (f"key explain.method: {cls.name} honours {', '.join(cls.explain_methods)}, not {method!r}"
                    + (f" ({cls.explain_note})" if cls.explain_note else ""))
        return None


def headline_interval(ds, statistic, n: int) -> dict[str, float]:
    """The 95% bootstrap interval of the task's headline metric over the n test cases
    (<metric>_ci_low, <metric>_ci_high): statistic(indices) recomputes the metric on a resample. Our test
    sets are small (a dozen positive mammograms), so a point value alone misleads."""
    from sciconv.metrics import bootstrap_interval
    from sciconv.runtime import derive_seed

    low, high = bootstrap_interval(statistic, n, ds.cfg["evaluate"]["bootstrap_samples"],
                                   derive_seed(ds.global_cfg["seed"], ds.name, "bootstrap"))
    return {f"{ds.task.headline_metric}_ci_low": low, f"{ds.task.headline_metric}_ci_high": high}


def training_records(ds) -> list[dict]:
    """The dataset's preprocessed training samples (for the classical baselines that are fitted)."""
    from sciconv import data
    from sciconv.paths import DatasetPaths

    paths = DatasetPaths(ds.results_dir)
    return data.load_records(paths.preprocessed, data.load_split(paths.split)["train"])


def baseline_features(ds, test: list[dict], target_of) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training features, training targets, test features): the domain's classical summary statistic
    of each sample, and `target_of(record)` of the training samples, for estimators fitted on them."""
    def features(records):
        return np.stack([np.ravel(ds.domain.baseline(r["image"], r["attrs"], ds.cfg, "features").features)
                         for r in records])

    train = training_records(ds)
    return features(train), np.asarray([target_of(r) for r in train]), features(test)


def fit_on_baseline_features(ds, test: list[dict], estimator, target_of):
    """`estimator` (a scikit-learn pipeline) fitted on the training samples' baseline features: the
    baseline a field builds from hand-made statistics. Returns it and the test samples' features."""
    train_features, targets, test_features = baseline_features(ds, test, target_of)
    return estimator.fit(train_features, targets), test_features
