"""`sciconv ui`: the MLflow UI over the project's store, on the loopback interface unless told otherwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from sciconv.runtime import log

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with status {process.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the MLflow server did not answer at {url} within {timeout_s:.0f} s")


def serve(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000, timeout_s: float = 120.0) -> int:
    """Start `mlflow server`, say the address once it answers, and run until interrupted."""
    from sciconv.tracking import ensure_store

    if host not in LOOPBACK:
        log.warning("serving the MLflow UI on %s: anyone who can reach this machine can read every run; "
                    "MLflow's server has no login of its own", host)
    ensure_store(tracking_uri)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    # The server's own chatter goes to stderr so stdout carries only the address, for scripts to read.
    # Its own session, so that stopping it stops its workers too.
    process = subprocess.Popen(command, stdout=sys.stderr, start_new_session=True)
    # SIGTERM (a service manager, a test) must clean up like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    try:
        wait_until_up(url, process, timeout_s)
        print(f"MLflow UI at {url} (Ctrl-C stops it)", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
