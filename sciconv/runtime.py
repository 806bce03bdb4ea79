"""Process-level helpers every step shares: logging, seeds, device, atomic files."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger("sciconv")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def derive_seed(seed: int, *names: str) -> int:
    """A stable per-purpose seed: the same global seed gives the same split, frames and weights everywhere."""
    digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(requested: str):
    """'auto' takes the GPU when there is one; asking for 'cuda' without one is an error, not a silent CPU run."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        from sciconv.errors import DeviceError

        raise DeviceError("device cuda was requested (--device or device: in config/config.yaml) but no CUDA GPU "
                          "is visible to this process; use --device auto or cpu, or set device: auto")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", claim_gpu(torch.cuda.device_count()))


_claimed: dict[int, object] = {}


def claim_gpu(n_devices: int, lock_dir: Path | str | None = None) -> int:
    """The index of a GPU no other sciconv process on this machine holds, held until this process ends.

    Snakemake caps concurrent GPU jobs at the number of GPUs but does not say which job gets
    which device (it sets no CUDA_VISIBLE_DEVICES), so every job would otherwise land on cuda:0.
    Each job takes an exclusive lock file per device; the operating system drops the lock when
    the process exits, also after a kill. Under a scheduler that already restricts the visible
    devices (SLURM sets CUDA_VISIBLE_DEVICES) there is one device and this returns 0.
    """
    import fcntl

    if n_devices <= 1:
        return 0
    if _claimed:
        return next(iter(_claimed))
    folder = Path(lock_dir or os.environ.get("SCICONV_GPU_LOCK_DIR", tempfile.gettempdir()))
    for index in range(n_devices):
        handle = open(folder / f"sciconv-gpu{index}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _claimed[index] = handle  # kept open: closing it would release the device
        log.info("using GPU %d of %d (the others are held by other sciconv jobs)", index, n_devices)
        return index
    log.warning("all %d GPUs are held by other sciconv jobs; sharing GPU 0", n_devices)
    return 0


@contextmanager
def step_lock(folder: Path | str, step: str, dataset: str):
    """Hold `<folder>/.sciconv-<step>.lock` while the block runs: a second process of the same step on the
    same dataset stops with a message naming the first. The lock is the operating system's (flock), so it
    is released when its holder ends, also after SIGKILL: a stale file from a dead process is taken over."""
    import fcntl

    from sciconv.errors import StepBusy

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".sciconv-{step}.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StepBusy(f"`sciconv {step} {dataset}` is already running (pid {holder}, lock {path}); "
                       "wait for it to end, or stop it, before running the step again") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def remove_outputs(paths: list[Path]) -> None:
    """Delete a step's earlier outputs before it runs afresh, so none of them can pass for this run's."""
    import shutil

    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def sha256_file(path: Path | str, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask (reading it means setting it; set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        # mkstemp makes the file 0600; a result shared on a cluster filesystem must follow the umask
        # as any file opened for writing does
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path | str, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def git_commit(cwd: Path | str = ".") -> str:
    """The commit of the project folder, else of the sciconv source tree (a run from elsewhere), else 'unknown'."""
    for folder in (Path(cwd), Path(__file__).resolve().parent):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0:
            return out.stdout.strip()
    return "unknown"


class Progress:
    """Progress over a known count: a line at every 10% in logs, so non-interactive logs stay short."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.next_report = what, total, 0.1

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total or self.total
        if done >= total or done / max(total, 1) >= self.next_report:
            log.info("%s: %d/%d", self.what, done, total)
            self.next_report = done / max(total, 1) + 0.1


# errno values (and the text h5py puts in its own OSError messages, which carry no errno)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def storage_problem(err: OSError) -> str | None:
    """A message saying what to change when writing failed for lack of space or permission, else None.

    h5py raises OSError("Unable to ... (errno = 28, error message = 'No space left on device' ...)")
    without setting errno, so its message is read as well.
    """
    text = str(err)
    code = err.errno
    if code is None:
        found = re.search(r"errno = (\d+)", text)
        code = int(found.group(1)) if found else None
    where = f" ({err.filename})" if err.filename else ""
    if code in _NO_SPACE or "No space left" in text or "quota" in text.lower():
        return (f"no space left on the device while writing{where}: {text.splitlines()[0][:300]}. "
                "Free space there, or point results_dir in config/config.yaml to a larger disk.")
    if code in _NOT_WRITABLE or "Permission denied" in text or "Read-only file system" in text:
        return (f"cannot write{where}: {text.splitlines()[0][:300]}. Make the results folder writable, "
                "or point results_dir in config/config.yaml to a folder you can write.")
    return None
