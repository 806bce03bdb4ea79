"""sciconv: raw scientific images to a trained, explained, tracked CNN."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sciconv")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
