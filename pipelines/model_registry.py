"""The MLflow model registry side of DCSOD: log the champion, register it, look it up.

``python -m pipelines.model_registry show dcsod-digits@champion`` prints the registered model's genotype and
metrics (``NAME@ALIAS`` or ``NAME/VERSION``); the tracking URI is ``--tracking-uri``, else
``MLFLOW_TRACKING_URI``, else MLflow's default. Unknown models print one line and exit 2.

>>> import mlflow
>>> model = mlflow.pytorch.load_model("models:/dcsod-digits@champion")   # doctest: +SKIP
>>> model.score(images)   # (N,) MSP, higher = more in-distribution; images (N, C, H, W) in [0, 1]  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
import sys

CHAMPION = "champion"
MODEL_URI_TAG = "dcsod.model_uri"


def log_model(run_id: str, model, example, tracking_uri: str, code_paths: list[str]) -> str:
    """Log ``model`` (a ScoredClassifier) as artifact ``model`` of run ``run_id``; return its model URI.
    The URI is also stored as the run tag ``dcsod.model_uri``."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(tracking_uri)
    with torch.no_grad():
        signature = infer_signature(example.numpy(), model(example).numpy())
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(model, name="model", code_paths=code_paths, signature=signature,
                                        pip_requirements=requirements, serialization_format="pickle")
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri


#: Version tags that say what a registered model was measured on; :func:`register_champion` compares them.
PROTOCOL_TAG, METRIC_TAG, VALUE_TAG, PRESET_TAG, SETTINGS_TAG = (
    "dcsod.protocol", "dcsod.metric", "dcsod.value", "dcsod.preset", "dcsod.settings")
#: MLflow's limit on a model version tag's value.
MAX_TAG_CHARS = 5000


def version_tags(cfg: dict, metric: str, value: float, extra: dict[str, str]) -> dict[str, str]:
    """What every registered version carries: preset, protocol (name and options, JSON), ranking metric and its
    test value, the full settings (JSON; left out past MLflow's 5,000-character tag limit, they are the run's
    params), plus ``extra`` (e.g. arch_hash, genotype)."""
    settings = json.dumps(cfg, sort_keys=True, default=str)
    tags = {PRESET_TAG: str(cfg.get("preset")), METRIC_TAG: metric, VALUE_TAG: repr(float(value)),
            PROTOCOL_TAG: json.dumps({"protocol": cfg["protocol"], "options": cfg["protocol_options"]},
                                     sort_keys=True, default=str), **extra}
    if len(settings) <= MAX_TAG_CHARS:
        tags[SETTINGS_TAG] = settings
    return tags


def should_promote(current: dict[str, str] | None, new: dict[str, str], promote: str) -> tuple[bool, str]:
    """Whether a new version (tags ``new``) takes alias ``champion`` from the version tagged ``current`` (None:
    no champion yet). ``promote``: ``if-better`` (only a strictly higher value of the same metric on the same
    protocol) or ``always``. Returns ``(promote?, one-line reason)``."""
    if promote == "always":
        return True, "final.promote=always"
    if current is None:
        return True, "first registered version"
    if not all(k in current for k in (PROTOCOL_TAG, METRIC_TAG, VALUE_TAG)):
        return True, "the current champion does not say what it was measured on"
    if current[PROTOCOL_TAG] != new[PROTOCOL_TAG] or current[METRIC_TAG] != new[METRIC_TAG]:
        return False, (f"the current champion was measured on another protocol or metric "
                       f"({current[METRIC_TAG]}, preset {current.get(PRESET_TAG)}); --set final.promote=always "
                       "replaces it")
    old, value = float(current[VALUE_TAG]), float(new[VALUE_TAG])
    if value > old:
        return True, f"{new[METRIC_TAG]} {value:.4f} > {old:.4f} of the current champion"
    return False, f"{new[METRIC_TAG]} {value:.4f} does not beat {old:.4f} of the current champion"


def register_champion(name: str, run_id: str, tags: dict[str, str], tracking_uri: str,
                      promote: str = "if-better") -> tuple[str, bool, str]:
    """Register the model logged in ``run_id`` as a version of ``name`` (once: a version from the same run is
    reused) with ``tags`` (:func:`version_tags`), and move alias ``champion`` to it if :func:`should_promote`
    says so. Returns ``(version, is_champion, reason)``."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        version = str(existing[0].version)
    else:
        model_uri = client.get_run(run_id).data.tags.get(MODEL_URI_TAG)
        if not model_uri:
            raise ValueError(f"run {run_id} has no logged model (tag {MODEL_URI_TAG})")
        mlflow.set_tracking_uri(tracking_uri)
        version = str(mlflow.register_model(model_uri, name, tags=tags).version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    if current is not None and str(current.version) == version:
        return version, True, "already the champion"
    promoted, reason = should_promote(None if current is None else dict(current.tags), tags, promote)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    elif current is not None:
        reason += f" (version {current.version} stays @{CHAMPION})"
    return version, promoted, reason


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS`` -> (name, alias, None); ``NAME/VERSION`` -> (name, None, version); ``NAME`` -> champion."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return name, None, version
    return ref, CHAMPION, None


def show(ref: str, tracking_uri: str | None = None) -> dict:
    """The registered model version ``ref`` with its run's genotype, tags and metrics (``LookupError`` if absent)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from .mlflow_runs import check_tracking_uri

    client = MlflowClient(check_tracking_uri(tracking_uri))
    name, alias, version = parse_ref(ref)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        raise LookupError(f"no registered model {ref!r} in {client.tracking_uri}") from None
    run = client.get_run(mv.run_id)
    return {
        "name": name, "version": str(mv.version), "aliases": list(mv.aliases or []), "run_id": mv.run_id,
        "arch_hash": mv.tags.get("arch_hash"), "genotype": json.loads(mv.tags.get("genotype") or "null"),
        "metrics": dict(sorted(run.data.metrics.items())), "source": mv.source,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.model_registry",
                                     description="Look up registered DCSOD models")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("show", help="print a registered model's genotype and metrics")
    p.add_argument("ref", help="NAME@ALIAS (e.g. dcsod-digits@champion), NAME/VERSION or NAME")
    p.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    try:
        info = show(args.ref, args.tracking_uri)
    except (LookupError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
