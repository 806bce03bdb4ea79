"""benchmarks/device/run.sh --smoke: the GPU check's every part on CPU at tiny sizes, so the script
that runs on the rare GPU machine cannot rot between those runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.e2e


def test_device_script_smoke_writes_both_reports_with_every_part_passing(tmp_path, tool_env):
    env = tool_env | {"PYTHON": sys.executable, "SCICONV_DEVICE_WHEELS": "0"}
    env.pop("OUT", None)
    run = subprocess.run([str(REPO / "benchmarks/device/run.sh"), "--smoke", str(tmp_path / "report")],
                         capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    report_dir = tmp_path / "report"
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + "".join(
        p.read_text()[-2000:] for p in report_dir.glob("*.log"))
    report = json.loads((report_dir / "device_report.json").read_text())
    assert report["environment"]["smoke"] is True and report["environment"]["fp32_matmul_tflops_1024"] > 0
    tests = report["tests"]
    assert tests["counts"]["passed"] >= 12 and tests["counts"]["failure"] == tests["counts"]["error"] == 0
    assert [row["dataset"] for row in report["throughput"]["rows"]] == ["ccd_full"]
    assert report["throughput"]["rows"][0]["ratio_vs_naive"] > 0
    pipeline = report["pipeline"]
    assert set(pipeline["metrics"]) == {"ccd_planned"}
    assert {(s["dataset"], s["step"]) for s in pipeline["steps"]} >= {
        ("ccd_planned", step) for step in ("simulate", "ingest", "split", "preprocess", "plan", "train", "evaluate",
                                           "explain")}
    planned = json.loads((report_dir / "plan_ccd_planned.json").read_text())
    assert planned["measured"]["step_s"] > 0 and "train.epochs" in planned["settings"]
    markdown = (report_dir / "device_report.md").read_text()
    for heading in ("## Environment", "## GPU tests", "## Training throughput", "## Snakemake pipeline"):
        assert heading in markdown
