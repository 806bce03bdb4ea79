"""The MLflow UI in a real (headless) browser: the run, its metrics and a saliency image appear.

Needs Playwright (the `test` extra) and a Chromium from the system (Debian's `chromium`
package; .ci/run installs it). Playwright's own browser download is never used.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import shrunk_mammo_config

pytestmark = pytest.mark.e2e


def chromium_executable() -> str | None:
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_ui_shows_the_run_its_metrics_and_a_saliency_image(project, tool_env):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra (Playwright) is not installed")
    browser_path = chromium_executable()
    if browser_path is None:
        pytest.skip("no system Chromium (Debian: apt install chromium)")
    from mlflow.tracking import MlflowClient

    from sciconv.ui import wait_until_up

    (project / "config/datasets/mammo_micro.yaml").write_text(yaml.safe_dump(shrunk_mammo_config()))
    run = subprocess.run([sys.executable, "-m", "sciconv.cli", "run", "mammo_micro"], cwd=project, env=tool_env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    store = f"sqlite:///{project}/results/mlflow.db"
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("mammo_micro")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    saliency = [a.path for a in client.list_artifacts(mlflow_run.info.run_id, "saliency")]
    assert saliency, "the run has no saliency images to look at"

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env=tool_env)
    base = f"http://127.0.0.1:{port}"
    run_url = f"{base}/#/experiments/{experiment.experiment_id}/runs/{mlflow_run.info.run_id}"
    try:
        wait_until_up(base, server, timeout_s=120)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(run_url)
            page.get_by_text("test_auroc").first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert "mammo_micro-train" in body and "val_auroc" in body and "train_loss" in body

            page.goto(f"{run_url}/artifacts/{saliency[0]}")
            # the UI fetches the artifact and shows it from a blob: URL once the bytes have arrived
            image = page.locator("img[src^='blob:']").first
            image.wait_for(timeout=60_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=image.element_handle(),
                                   timeout=60_000)
            shot = project / "results/mlflow_ui_saliency.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert shot.stat().st_size > 10_000
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers, by the PID we started
        server.wait(timeout=30)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the MLflow server is still listening"
