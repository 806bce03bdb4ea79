"""Every error a user can meet is one or two sentences that say what is wrong and what to do."""

from __future__ import annotations

import os

import h5py
import pytest
import torch
import yaml

from sciconv import io
from sciconv.cli import main


def error_of(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_step_before_its_inputs_names_the_step_to_run_first(project, capsys):
    err = error_of(capsys, ["train", "ccd_micro"])
    assert "results/ccd_micro/split.json not found: train reads it; run `sciconv split ccd_micro` first" in err


def test_simulate_on_a_files_dataset_says_to_ingest(project, capsys):
    (project / "config/datasets/mine.yaml").write_text(yaml.safe_dump(
        {"domain": "ccd", "task": "segmentation", "source": {"kind": "files", "layout": "paired", "path": "."}}))
    err = error_of(capsys, ["simulate", "mine"])
    assert "key source.kind: 'files' datasets are read from their own files, not simulated" in err
    assert "sciconv ingest mine" in err


def test_device_cuda_without_a_gpu_says_what_to_set(project, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    err = error_of(capsys, ["run", "ccd_micro", "--device", "cuda"])
    assert "no CUDA GPU is visible" in err and "--device auto or cpu" in err


def test_a_zero_byte_file_is_called_empty_whatever_its_format(tmp_path):
    for suffix in (".png", ".dcm", ".fits", ".nii.gz", ".h5", ".npy", ".tif"):
        path = tmp_path / f"blank{suffix}"
        path.write_bytes(b"")
        with pytest.raises(io.ReadError, match=r"blank.*: the file is empty \(0 bytes\)"):
            io.read(path)


def test_hdf5_without_the_named_or_any_dataset(tmp_path):
    from sciconv.io.arrays import read_hdf5

    path = tmp_path / "groups_only.h5"
    with h5py.File(path, "w") as handle:
        handle.create_group("scans").attrs["note"] = "no data here"
    with pytest.raises(io.ReadError, match=r"groups_only.h5: holds no dataset \(an image must be stored as"):
        io.read(path)
    with pytest.raises(io.ReadError, match=r"no dataset 'image'; it holds no dataset at all \(set source.hdf5.image"):
        read_hdf5(path, "image")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this would have run",))


def test_a_checkpoint_with_code_objects_is_refused_in_plain_words(project, capsys):
    path = project / "model.pt"
    torch.save({"model_args": {}, "payload": RunsCode()}, path)
    err = error_of(capsys, ["predict", "--model", str(path), str(path), "--out", "pred"])
    assert "refused: the file holds code objects (posix.system)" in err
    assert "weights_only" not in err  # not torch's advice to turn the safety off


def test_the_inputs_a_step_checks_are_the_inputs_its_rule_declares():
    """sciconv <step> names the missing input and the step that makes it; it must never demand a file its
    rule does not wait for (the workflow would start the step before that file exists)."""
    import re

    from conftest import REPO

    from sciconv.paths import DatasetPaths

    paths = DatasetPaths("results/D")
    rules = "".join((REPO / "workflow/rules" / f).read_text() for f in ("data.smk", "model.smk"))
    for step in ("split", "preprocess", "plan", "train", "evaluate", "explain"):
        block = rules[rules.index(f"rule {step}:"):]
        inputs = block[block.index("input:"):block.index("output:")]
        declared = set(re.findall(r"\{\{dataset\}\}/([\w./]+)\"", inputs))
        if "model=trained_models" in inputs:  # the model, or each cross-validation fold's (common.smk)
            common = (REPO / "workflow/rules/common.smk").read_text()
            function = common[common.index("def trained_models"):][:600]
            declared |= set(re.findall(r"\{wildcards.dataset\}/([\w./]+)\"", function))
        checked = {str(path.relative_to(paths.root)) for path, _ in paths.inputs(step)}
        assert checked and checked <= declared, (step, checked - declared)
