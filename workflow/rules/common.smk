# Config loading, the dataset list and input functions shared by all rules.
import os
import shutil
import subprocess
import uuid

from snakemake.exceptions import WorkflowError

from sciconv.config import ConfigError, load_dataset, load_global
from sciconv.settings import settings_text
from sciconv.tracking import SNAKEMAKE_RUN_ID, ensure_store, tracking_uri

# The global config file sciconv's own commands should read: the one given to Snakemake.
GLOBAL_CONFIG = workflow.configfiles[-1] if workflow.configfiles else "config/config.yaml"

try:
    # Validate every dataset now, at parse time: a bad key stops the run before any job.
    SCICONV = load_global(GLOBAL_CONFIG, overrides=dict(config))
    DATASETS = {name: load_dataset(name, SCICONV) for name in SCICONV["datasets"]}
except ConfigError as err:
    raise WorkflowError(str(err)) from None

RESULTS = SCICONV["results_dir"]
# One id per `snakemake` invocation, tagged on every MLflow run it touches (jobs inherit the
# environment; an environment variable, not a rule param, so it never triggers a rerun).
os.environ.setdefault(SNAKEMAKE_RUN_ID, uuid.uuid4().hex)
ENV = "../envs/sciconv.yaml"


def count_gpus():
    """GPUs on this machine, from nvidia-smi (cheap: no torch import at parse time)."""
    if SCICONV["gpus"] is not None:
        return SCICONV["gpus"]
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


N_GPUS = count_gpus()
TRAIN_ON_GPU = SCICONV["device"] == "cuda" or (SCICONV["device"] == "auto" and N_GPUS > 0)


def train_threads():
    """train_threads, else all --cores on a GPU (one job per GPU) and half of them on CPU."""
    if SCICONV["train_threads"]:
        return SCICONV["train_threads"]
    try:
        cores = workflow.cores
    except WorkflowError:
        return 2  # a cluster executor defines no local core count; each job gets its own allocation
    return cores if TRAIN_ON_GPU else max(1, cores // 2)


TRAIN_THREADS = train_threads()
if "gpu" not in workflow.global_resources:
    # Locally Snakemake treats an undeclared resource as unlimited; cap it at the GPUs present
    # (at least one when CUDA is requested) so GPU jobs never share a device by accident.
    workflow.register_resource("gpu", max(N_GPUS, 1 if TRAIN_ON_GPU else 0))


wildcard_constraints:
    dataset="|".join(DATASETS) or "no-datasets-configured",
    fold=r"\d+",


def dataset_yaml(wildcards):
    return str(DATASETS[wildcards.dataset].path)


def step_settings(step):
    """params.settings of a rule: the resolved settings its step reads, compared by Snakemake's params
    rerun trigger (sciconv.settings)."""
    return lambda wildcards: settings_text(DATASETS[wildcards.dataset], step)


def train_gpus(wildcards):
    """A training job holds as many GPUs as its dataset's `gpus` (data-parallel), none on CPU.

    Under a cluster executor the jobs run on other machines: that this one (a login node) has no
    GPU says nothing, so the dataset's count is asked for (called when jobs are made, by then
    Snakemake knows its executor)."""
    return DATASETS[wildcards.dataset].cfg["gpus"] if TRAIN_ON_GPU or not workflow.local_exec else 0


def trained_models(wildcards):
    """What evaluate and explain read: the model, or every cross-validation fold's model."""
    folds = DATASETS[wildcards.dataset].cv_folds
    if folds:
        return [f"{RESULTS}/{wildcards.dataset}/folds/fold_{fold}/model/model.pt" for fold in folds]
    return f"{RESULTS}/{wildcards.dataset}/model/model.pt"


def raw_input(wildcards):
    """Simulated datasets ingest the simulator's manifest; others read their own files."""
    if DATASETS[wildcards.dataset].cfg["source"]["kind"] == "simulate":
        return f"{RESULTS}/{wildcards.dataset}/raw"
    return []


def final_outputs():
    per_dataset = [f"{RESULTS}/{name}/{leaf}" for name in DATASETS for leaf in ("metrics.json", "saliency")]
    return per_dataset + [f"{RESULTS}/summary.md", f"{RESULTS}/summary.html"]


def ensure_tracking_store():
    ensure_store(tracking_uri(SCICONV))
