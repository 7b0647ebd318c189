"""The registry alias ``@champion`` moves only to a model that beats the current champion on the same protocol and
metric (or with ``final.promote=always``), on a real MLflow store; every version says what it was measured on."""
import json

import pytest

from pipelines.model_registry import (
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
    from pipelines.model_registry import MODEL_URI_TAG

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
