"""`sciconv <step> <dataset>`: parse, load and validate the config, run one step.

<dataset> is a name (config/datasets/<name>.yaml) or a path to a dataset YAML
(its file stem is the dataset name). Outputs go under results/<name>/ in the
current directory (global config key results_dir).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sciconv import __version__

STEPS = {
    "simulate": "write raw files in the domain's format with the built-in simulator -> results/D/raw/",
    "ingest": "read raw files through the format readers, check them -> results/D/ingested.h5",
    "split": "deterministic train/val/test split from the seed -> results/D/split.json",
    "preprocess": "modality-aware preprocessing -> results/D/preprocessed.h5",
    "plan": "fingerprint the data, plan the settings the YAML leaves out -> results/D/fingerprint.json, plan.json",
    "train": "train the configured MONAI network, log to MLflow -> results/D/model/",
    "evaluate": "test metrics beside the classical baseline -> results/D/metrics.json",
    "explain": "saliency maps for test images -> results/D/saliency/*.png",
    "inspect": "print layer shapes, receptive field and parameter count; check the input size",
    "run": "all steps in order for one dataset, without Snakemake",
}
UI_HELP = "start the MLflow UI over the project's store and print its address"
SUMMARY_HELP = "one table across the configured datasets -> results/summary.md and results/summary.html"
PREDICT_HELP = "apply a trained model to new files -> masks in the input's format and predictions.csv"
SOURCES_HELP = ("show what sciconv sees in a folder, archive, manifest or dataset's source: samples per set, "
                "channels, classes, formats and problems; writes nothing")
PIPELINE = ["simulate", "ingest", "split", "preprocess", "plan", "train", "evaluate", "explain"]
DEVICE_STEPS = {"plan", "train", "evaluate", "explain", "run"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sciconv",
        description="Raw scientific images to a trained, explained, MLflow-tracked CNN. "
                    "Each step reads the previous step's files and writes its own under results/<dataset>/.",
    )
    parser.add_argument("--version", action="version", version=f"sciconv {__version__}")
    sub = parser.add_subparsers(dest="step", required=True, metavar="<step>")
    for step, help_text in STEPS.items():
        p = sub.add_parser(step, help=help_text, description=help_text)
        p.add_argument("dataset", help="dataset name (config/datasets/<name>.yaml) or path to a dataset YAML")
        p.add_argument("--config", default="config/config.yaml",
                       help="global config file (default: %(default)s)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="override a dataset key for this run, validated like the YAML and recorded in the "
                            "MLflow params; repeatable (e.g. --set train.epochs=3 --set model.channels=[8,16])")
        if step in DEVICE_STEPS:
            p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                           help="override the global config's device")
            p.add_argument("--threads", type=int, help="CPU threads for torch (default: all)")
        if step == "train":
            p.add_argument("--fold", type=int, help="with split.k_folds: train this cross-validation fold "
                                                    "(-> results/D/folds/fold_<f>/model/)")
    p = sub.add_parser("ui", help=UI_HELP, description=UI_HELP)
    p.add_argument("--config", default="config/config.yaml", help="global config file (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind; anything but loopback warns (default: %(default)s)")
    p.add_argument("--port", type=int, default=5000, help="(default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p = sub.add_parser("summary", help=SUMMARY_HELP, description=SUMMARY_HELP)
    p.add_argument("--config", default="config/config.yaml", help="global config file (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p = sub.add_parser("sources", help=SOURCES_HELP, description=SOURCES_HELP)
    p.add_argument("path", help="a data folder, an .npz archive or a manifest CSV; or a dataset name or YAML")
    p.add_argument("--layout", choices=["folders", "paired", "manifest", "nnunet", "npz"],
                   help="how to read PATH (default: guessed from its contents)")
    p.add_argument("--channels", help="comma-separated channel tokens of samples kept one file per channel")
    p.add_argument("--config", default="config/config.yaml", help="global config file, for a dataset name")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p = sub.add_parser("predict", help=PREDICT_HELP, description=PREDICT_HELP)
    p.add_argument("inputs", nargs="+", help="files or folders to predict on")
    p.add_argument("--model", required=True,
                   help="results/<dataset>/model (or its model.pt); results/<dataset> of a cross-validated dataset "
                        "(the folds' ensemble); or an MLflow URI runs:/<run id>, models:/<name>/<version>")
    p.add_argument("--out", required=True, help="folder for the predictions")
    p.add_argument("--config", default="config/config.yaml", help="global config, for the MLflow store")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--on-bad-input", choices=["fail", "skip"], default="fail", dest="on_bad_input",
                   help="fail: an input that cannot be read or does not fit the model stops the run and nothing "
                        "is written; skip: predict the rest and list those in rejected.csv (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def run_step(step: str, ds, args, fold: int | None = None) -> None:
    """One pipeline step (of one cross-validation fold, for train): under its lock, its earlier outputs
    removed first (so an interrupted rerun can never leave an old model.pt or metrics.json passing for
    the new settings' results)."""
    from sciconv import distributed
    from sciconv.paths import DatasetPaths
    from sciconv.runtime import remove_outputs, step_lock

    if step not in PIPELINE or distributed.current().size > 1:
        # inspect writes nothing; a process torchrun started runs under its launcher's lock
        return call_step(step, ds, args, fold)
    paths = DatasetPaths(ds.results_dir, fold)
    for path, producer in paths.inputs(step, ds.cv_folds):
        if not path.exists():
            from sciconv.errors import MissingInput

            raise MissingInput(f"{path} not found: {step} reads it; run `sciconv {producer} {ds.name}` first "
                               f"(or `sciconv run {ds.name}`, or snakemake, for every step in order)")
    with step_lock(paths.root, step if fold is None else f"{step}-fold{fold}", ds.name):
        remove_outputs(paths.outputs(step))
        if step == "train" and distributed.should_launch(ds.cfg["gpus"]):
            # the same command again, as gpus processes under torchrun
            argv = ["train", str(ds.path), "--config", args.config] + (["--verbose"] if args.verbose else [])
            argv += ["--fold", str(fold)] if fold is not None else []
            argv += (["--device", args.device] if args.device else []) + (["--threads", str(args.threads)] if args.threads else [])
            argv += [f"--set={item}" for item in ds.overrides]
            if distributed.launch(ds.cfg["gpus"], argv) != 0:
                raise RuntimeError(f"data-parallel training of {ds.name} failed; the processes' errors are above")
            return
        call_step(step, ds, args, fold)


def call_step(step: str, ds, args, fold: int | None = None) -> None:
    module = importlib.import_module(f"sciconv.steps.{step}")
    kwargs = {}
    if step in ("plan", "train", "evaluate"):
        kwargs = {"device": args.device, "threads": args.threads}
    if step == "train":
        kwargs["fold"] = fold
    elif step == "explain":
        kwargs = {"device": args.device}
    module.run(ds, **kwargs)


PROJECT_COMMANDS = ("sources", "ui", "summary", "predict")


def project_command(args) -> int:
    """The commands that take no dataset: sources, ui, summary, predict."""
    from sciconv import config

    if args.step == "sources":
        from sciconv.steps import sources

        sources.run(args.path, args.config, args.layout, args.channels)
        return 0
    global_cfg = config.load_global(args.config)
    from sciconv.tracking import tracking_uri

    if args.step == "ui":
        from sciconv.ui import serve

        return serve(tracking_uri(global_cfg), args.host, args.port)
    if args.step == "summary":
        from sciconv.steps import summary

        summary.run(global_cfg)
        return 0
    from sciconv.steps import predict

    predict.run(args.model, args.inputs, args.out, args.device, tracking_uri(global_cfg), args.on_bad_input)
    return 0


def interrupt(signum, frame) -> None:
    """SIGTERM (what Snakemake and schedulers send) and SIGINT stop a step the same way (StepInterrupted)."""
    from sciconv.errors import StepInterrupted

    raise StepInterrupted(signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import signal

    from sciconv import config
    from sciconv.runtime import setup_logging

    setup_logging(args.verbose)
    # Errors a user can fix by changing a file: one clear message, no traceback.
    from sciconv.io import ReadError
    from sciconv.errors import DeviceError, MissingInput, ModelConfigError, PredictError, StepBusy, TrainingError
    from sciconv.planning import PlanError
    from sciconv.sources import SourceError
    from sciconv.steps.ingest import IngestError
    from sciconv.store import StoreError

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        if args.step in PROJECT_COMMANDS:
            return project_command(args)
        global_cfg = config.load_global(args.config)
        ds = config.load_dataset(args.dataset, global_cfg, args.overrides)
        steps = PIPELINE if args.step == "run" else [args.step]
        if args.step == "run" and ds.cfg["source"]["kind"] != "simulate":
            steps = steps[1:]
        for step in steps:
            if step == "train" and getattr(args, "fold", None) is not None:
                run_step(step, ds, args, args.fold)
            elif step == "train" and args.step == "run" and ds.cv_folds:
                for fold in ds.cv_folds:  # one after another here; Snakemake trains them side by side
                    run_step(step, ds, args, fold)
            else:
                run_step(step, ds, args)
    except (config.ConfigError, ModelConfigError, IngestError, StoreError, ReadError, PredictError, DeviceError,
            TrainingError, StepBusy, MissingInput, PlanError, SourceError) as err:
        print(f"sciconv {args.step}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"sciconv {args.step}: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except OSError as err:
        from sciconv.runtime import storage_problem

        reason = storage_problem(err)
        if reason is None:
            raise
        print(f"sciconv {args.step}: error: {reason}", file=sys.stderr)
        return 3
    return 0



if __name__ == "__main__":
    sys.exit(main())
