"""Config validation: defaults filled, every mistake named by file, key path and allowed values."""

import pytest
import yaml
from conftest import REPO

from sciconv.config import ConfigError, load_dataset, load_global, read_yaml


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_fill_a_minimal_dataset(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    g = load_global(write(tmp_path / "c.yaml", {"datasets": ["d"], "datasets_dir": str(tmp_path)}))
    write(tmp_path / "d.yaml", {"domain": "ccd", "task": "segmentation", "source": {"kind": "simulate"}})
    ds = load_dataset("d", g)
    assert ds.name == "d"
    assert ds.cfg["train"]["epochs"] >= 1
    assert ds.cfg["source"]["pixel_size_um"] == 15.0  # from the domain's schema
    assert ds.cfg["train"]["class_sampling_ratios"] == [1, 4, 2, 1, 1]  # from the domain's DEFAULTS
    assert g["mlflow_tracking_uri"] is None
    from sciconv.tracking import tracking_uri

    assert tracking_uri(g) == "sqlite:///results/mlflow.db"
    assert tracking_uri(g | {"results_dir": "/scratch/me/results"}) == "sqlite:////scratch/me/results/mlflow.db"


def test_unknown_key_names_file_path_and_allowed_keys(tmp_path):
    g = load_global(write(tmp_path / "c.yaml", {"datasets": ["d"]}))
    path = write(tmp_path / "d.yaml", {"domain": "ccd", "task": "segmentation",
                                       "source": {"kind": "simulate"}, "train": {"epochz": 3}})
    with pytest.raises(ConfigError) as err:
        load_dataset(str(path), g)
    message = str(err.value)
    assert str(path) in message and "train.epochz" in message and "epochs" in message


def test_bad_enum_lists_the_choices(tmp_path):
    g = load_global(write(tmp_path / "c.yaml", {"datasets": ["d"]}))
    path = write(tmp_path / "d.yaml", {"domain": "ccd", "task": "segmentation", "source": {"kind": "simulate"},
                                       "model": {"name": "resnet9000"}})
    with pytest.raises(ConfigError, match=r"model.name: 'resnet9000' is not one of .*unet"):
        load_dataset(str(path), g)


def test_domain_section_keys_are_checked_against_the_domain_schema(tmp_path):
    g = load_global(write(tmp_path / "c.yaml", {"datasets": ["d"]}))
    path = write(tmp_path / "d.yaml", {"domain": "ccd", "task": "segmentation",
                                       "source": {"kind": "simulate", "readout_noise": 2}})
    with pytest.raises(ConfigError, match="source.readout_noise is not allowed.*readout_noise_e"):
        load_dataset(str(path), g)


def test_unknown_domain_and_unsupported_task(tmp_path):
    g = load_global(write(tmp_path / "c.yaml", {"datasets": ["d"]}))
    path = write(tmp_path / "d.yaml", {"domain": "sonar", "task": "segmentation", "source": {"kind": "simulate"}})
    with pytest.raises(ConfigError, match="domain: 'sonar' is not one of the allowed values: .*ccd"):
        load_dataset(str(path), g)
    path = write(tmp_path / "e.yaml", {"domain": "ccd", "task": "regression", "source": {"kind": "simulate"}})
    with pytest.raises(ConfigError, match="task: domain 'ccd' supports segmentation"):
        load_dataset(str(path), g)


def test_global_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="device: 'gpu' is not one of the allowed values: auto, cpu, cuda"):
        load_global(write(tmp_path / "c.yaml", {"datasets": ["d"], "device": "gpu"}))
    with pytest.raises(ConfigError, match="file not found"):
        load_global(tmp_path / "missing.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    from sciconv.tracking import tracking_uri

    assert tracking_uri(load_global(write(tmp_path / "ok.yaml", {"datasets": ["d"]}))) == "sqlite:///elsewhere.db"


def test_shipped_configs_are_valid():
    from conftest import REPO

    g = load_global(REPO / "config/config.yaml")
    for name in g["datasets"]:
        assert load_dataset(str(REPO / "config/datasets" / f"{name}.yaml"), g).cfg["domain"]


@pytest.mark.parametrize("path", sorted((REPO / "config/datasets").glob("*_full.yaml")), ids=lambda p: p.stem)
def test_full_size_configs_are_valid_and_their_networks_take_their_inputs(path):
    """The realistic-scale configs (for a GPU) load, and the network's arithmetic fits their patches."""
    from sciconv import models

    ds = load_dataset(str(path), load_global(REPO / "config/config.yaml"))
    assert ds.name.endswith("_full") and ds.cfg["source"]["kind"] == "simulate"
    train = ds.cfg["train"]
    if ds.cfg["task"] == "segmentation" or train["object_crops"]:  # trained on patches of this size
        size = train["patch_size"]
        args = models.model_args(ds.cfg["model"], len(size), ds.domain.input_channels(ds.cfg), len(ds.class_names))
        models.check_input_size(args, size)
        whole = ds.cfg["preprocess"].get("size")
        assert whole is None or all(p <= w for p, w in zip(size, whole))


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("domain: ccd\ntask: segmentation\ntrain:\n  epochs: 5\n  batch_size: 4\n  epochs: 50\n")
    with pytest.raises(ConfigError, match=r"d.yaml: key 'epochs' appears twice in one mapping: first on line 4, "
                                          r"again on line 6"):
        read_yaml(path)


def test_a_patch_the_network_cannot_take_stops_the_load_before_any_job(tmp_path):
    g = load_global(write(tmp_path / "c.yaml", {"datasets": ["d"], "datasets_dir": str(tmp_path)}))
    write(tmp_path / "d.yaml", {"domain": "ccd", "task": "segmentation", "source": {"kind": "simulate"},
                                "model": {"name": "unet", "channels": [8, 16, 32], "strides": [2, 2]},
                                "train": {"patch_size": [30, 30]}})
    with pytest.raises(ConfigError, match=r"d.yaml: key train.patch_size: .*\[30, 30\] does not fit the network: "
                                          r"the unet downsamples by 4 .* use for example \[28, 28\] or \[32, 32\]"):
        load_dataset("d", g)
    write(tmp_path / "d.yaml", {"domain": "ccd", "task": "segmentation", "source": {"kind": "simulate"},
                                "model": {"name": "unet", "channels": [8, 16, 32], "strides": [2, 2]},
                                "train": {"patch_size": [32, 32]}})
    assert load_dataset("d", g).cfg["train"]["patch_size"] == [32, 32]
