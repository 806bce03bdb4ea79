"""docs/configuration.md is what the schemas say today: regenerate it after changing a schema."""

import subprocess
import sys

from conftest import REPO


def test_configuration_reference_is_current():
    check = subprocess.run([sys.executable, "-m", "sciconv.reference", "--check", "docs/configuration.md"],
                           cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_reference_lists_every_dataset_key_and_the_rerun_table():
    from sciconv.config import load_schema
    from sciconv.reference import render

    text = render()
    for key in load_schema("dataset")["properties"]:
        assert f"`{key}" in text, key
    assert "| explain | " in text and "`explain`" in text and "`seed`" in text
