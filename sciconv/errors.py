"""Errors a user fixes by changing a file, raised by modules that import torch.

They live here so that `sciconv <step>` can catch them without importing torch: a data step
(ingest, split, preprocess) then starts in a fraction of a second, which counts when a large
dataset is ingested as thousands of jobs.
"""


class ModelConfigError(ValueError):
    """The configured network cannot take the configured input; the message says what to change."""


class PredictError(ValueError):
    """The model or the inputs of sciconv predict cannot be used; the message says which and why."""


class DeviceError(ValueError):
    """The requested device is not there (device: cuda without a visible GPU); the message says what to set."""


class TrainingError(RuntimeError):
    """Training cannot go on (a loss that is no longer finite); the message says what to check."""


class MissingInput(FileNotFoundError):
    """A step's input from an earlier step is not there; the message names the step to run first."""


class StepBusy(RuntimeError):
    """Another process runs the same step on the same dataset; the message names it."""


class StepInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached a step: it stops, its MLflow run ends KILLED, and the exit status is
    128 + the signal's number, as a shell reports a killed command."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(signal.Signals(signum).name)
