"""`sciconv ui` serves the project's store on loopback and says so only once it answers."""

import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_answers_on_loopback_after_printing_its_address(project, tool_env):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "sciconv.cli", "ui", "--port", str(port)], cwd=project,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=tool_env)
    try:
        line = process.stdout.readline()  # printed only after the server answered
        assert line.startswith(f"MLflow UI at http://127.0.0.1:{port}"), line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            assert answer.status == 200
        assert (project / "results/mlflow.db").is_file()  # the project's own store
    finally:
        process.terminate()
        process.wait(timeout=30)
    time.sleep(0.5)
    with socket.socket() as s:  # the server is gone with the command
        assert s.connect_ex(("127.0.0.1", port)) != 0
