"""Errors a user fixes by changing a file, raised by modules that import torch.

They live here so that `sciconv <step>` can catch them without importing torch: a data step
(ingest, split, preprocess) then starts in a fraction of a second, which counts when a large
dataset is ingested as thousands of jobs.
"""


class ModelConfigError(ValueError):
    """The configured network cannot take the configured input; the message says what to change."""


class PredictError(ValueError):
    """The model or the inputs of sciconv predict cannot be used; the message says which and why."""
