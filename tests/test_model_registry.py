"""The registry alias ``@champion`` moves only to a model that beats the current champion on the same protocol and
metric (or with ``final.promote=always``), on a real MLflow store; every version says what it was measured on."""
import json
import os

import numpy as np
import pytest
import torch

from pipelines.nas.model_registry import (
    METRIC_TAG,
    PRESET_TAG,
    PROTOCOL_TAG,
    SETTINGS_TAG,
    VALUE_TAG,
    register_champion,
    should_promote,
    version_tags,
)

mlflow = pytest.importorskip("mlflow")


def cfg(preset="quick", protocol="digits", **options):
    return {"preset": preset, "protocol": protocol, "protocol_options": options, "train": {"epochs": 1}}


def test_version_tags_say_what_the_model_was_measured_on():
    tags = version_tags(cfg(seed=1), "auroc_msp", 0.8125, {"arch_hash": "abc"})
    assert tags[PRESET_TAG] == "quick" and tags[METRIC_TAG] == "auroc_msp" and float(tags[VALUE_TAG]) == 0.8125
    assert json.loads(tags[PROTOCOL_TAG]) == {"protocol": "digits", "options": {"seed": 1}}
    assert json.loads(tags[SETTINGS_TAG])["train"] == {"epochs": 1} and tags["arch_hash"] == "abc"
    huge = version_tags({**cfg(), "notes": "x" * 6000}, "auroc_msp", 0.5, {})
    assert SETTINGS_TAG not in huge  # past MLflow's tag limit the settings stay the run's params


@pytest.mark.parametrize("current, value, metric, protocol, promote, expected", [
    (None, 0.5, "auroc_msp", "digits", "if-better", True),          # nothing registered yet
    ("0.90", 0.95, "auroc_msp", "digits", "if-better", True),       # better on the same protocol and metric
    ("0.90", 0.90, "auroc_msp", "digits", "if-better", False),      # a tie does not move it
    ("0.90", 0.60, "auroc_msp", "digits", "if-better", False),      # a smoke run does not replace a real champion
    ("0.90", 0.99, "auroc_energy", "digits", "if-better", False),   # another metric: not comparable
    ("0.90", 0.99, "auroc_msp", "cifar10-split", "if-better", False),  # another protocol: not comparable
    ("0.90", 0.10, "auroc_msp", "digits", "always", True),
])
def test_should_promote(current, value, metric, protocol, promote, expected):
    old = None if current is None else version_tags(cfg(), "auroc_msp", float(current), {})
    new = version_tags(cfg(protocol=protocol), metric, value, {})
    ok, reason = should_promote(old, new, promote)
    assert ok is expected and reason and "\n" not in reason


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def logged_run(client, experiment_id: str) -> str:
    from pipelines.nas.model_registry import MODEL_URI_TAG

    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant())
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return run.info.run_id


def test_champion_alias_moves_only_to_a_better_model_on_a_real_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("registry", artifact_location=str(tmp_path / "artifacts"))

    def register(value, preset="quick", metric="auroc_msp", promote="if-better"):
        tags = version_tags(cfg(preset=preset), metric, value, {})
        return register_champion("dcsod-digits", logged_run(client, exp), tags, uri, promote)

    def champion() -> str:
        return str(client.get_model_version_by_alias("dcsod-digits", "champion").version)

    assert register(0.90)[:2] == ("1", True)
    version, promoted, reason = register(0.60, preset="ci")  # a smoke run with the same protocol and metric
    assert (version, promoted, champion()) == ("2", False, "1")
    assert "does not beat 0.9000" in reason and "version 1 stays @champion" in reason
    assert register(0.95)[:2] == ("3", True) and champion() == "3"
    assert register(0.99, metric="auroc_energy")[1] is False and champion() == "3"
    assert register(0.10, promote="always")[:2] == ("5", True) and champion() == "5"
    versions = client.search_model_versions("name='dcsod-digits'")
    assert {v.tags[PRESET_TAG] for v in versions} == {"quick", "ci"}
    assert all(METRIC_TAG in v.tags and VALUE_TAG in v.tags for v in versions)


def register_tiny_model(root) -> tuple[str, str, object]:
    """Log :func:`test_export.tiny_scored_classifier` with :func:`log_model` into a SQLite store under ``root``,
    register it as version 1 of ``tiny`` (@champion, tagged with its genotype) with metric ``auroc_msp``.
    Returns ``(tracking URI, registered name, the in-process model)``."""
    from test_export import tiny_scored_classifier

    from pipelines.nas.final import source_dirs
    from pipelines.nas.model_registry import log_model

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("tiny", artifact_location=str(root / "artifacts"))
    run_id = client.create_run(exp).info.run_id
    client.log_metric(run_id, "auroc_msp", 0.8125)
    model = tiny_scored_classifier()
    log_model(run_id, model, torch.rand(3, 1, 8, 8), uri, source_dirs())
    tags = version_tags(cfg(), "auroc_msp", 0.8125, {"arch_hash": model.net.genotype.arch_hash,
                                                     "genotype": model.net.genotype.to_json()})
    assert register_champion("tiny", run_id, tags, uri)[:2] == ("1", True)
    return uri, "tiny", model


@pytest.fixture(scope="module")
def tiny_registered(tmp_path_factory):
    return register_tiny_model(tmp_path_factory.mktemp("registry"))


def test_pyfunc_flavour_reads_every_pixel_format_and_returns_the_ood_scores(tiny_registered):
    from mlflow.exceptions import MlflowException
    from test_export import PIXELS, same_pixels_every_format

    from trainables.image.export import OUTPUT_KEYS

    uri, name, model = tiny_registered
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    want = model.outputs(PIXELS.astype(np.uint8))
    for images in same_pixels_every_format(PIXELS):
        got = served.predict(images)
        for key in OUTPUT_KEYS:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} for {type(images)} {images.dtype}")
    with pytest.raises(MlflowException, match=r"float pixels must be in \[0, 1\].*/ 16") as err:
        served.predict(PIXELS / 16.0)  # sklearn's digits, unscaled
    assert "\n" not in err.value.message
    assert served.metadata.get_params_schema().params[0].name == "pixels"
    assert served.metadata.get_input_schema() is None  # MLflow must not cast the pixels to one dtype


def test_pytorch_flavour_still_returns_the_scored_classifier_and_pyfunc_unpickles_no_code(tiny_registered):
    from mlflow.models import Model
    from test_export import PIXELS

    from trainables.image.export import SERVED_RECIPE, SERVED_WEIGHTS, ScoredClassifier

    uri, name, model = tiny_registered
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(f"models:/{name}/1")
    assert isinstance(loaded, ScoredClassifier) and loaded.class_names == model.class_names
    torch.testing.assert_close(loaded(PIXELS.astype(np.uint8)), model(PIXELS.astype(np.uint8)))
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/1")
    pyfunc = Model.load(local).flavors["python_function"]
    assert pyfunc["loader_module"] == "trainables.image.export" and pyfunc["code"] == "code"
    assert sorted(os.listdir(os.path.join(local, pyfunc["data"]))) == sorted([SERVED_RECIPE, SERVED_WEIGHTS])


def test_registry_show_prints_the_genotype_one_line_per_cell(tiny_registered, capsys):
    from pipelines.nas.model_registry import main

    uri, name, model = tiny_registered
    assert main(["show", f"{name}@champion", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{name} version 1 @champion  run ")
    assert out[1] == f"arch_hash: {model.net.genotype.arch_hash}"
    stages = [line for line in out if line.lstrip().startswith("stage ")]
    assert len(stages) == 3 and all("-> out=cat(v" in line and "(v0" in line for line in stages)
    assert "  auroc_msp  0.8125" in out and out[-1].startswith("source: ")
    assert len(out) < 12 and not any(line.lstrip().startswith(("{", "[")) for line in out)
    assert main(["show", f"{name}/1", "--tracking-uri", uri, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["genotype"] == json.loads(model.net.genotype.to_json()) and info["metrics"] == {"auroc_msp": 0.8125}


def test_cell_line_names_operators_inputs_leaves_and_dead_vertices():
    from pipelines.nas.model_registry import cell_line
    from search_space.genotype import Cell

    cell = Cell.create(["conv1x1", "conv3x3", "conv5x5", "dwconv3x3"], [[0, 1], [0, 2], [1, 2], [3, 4]])
    assert cell_line(cell) == "v1=conv1x1(v0) v2=conv3x3(v0,v1) -> out=cat(v2) (dead: v3,v4)"
