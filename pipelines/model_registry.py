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


def register_champion(name: str, run_id: str, tags: dict[str, str], tracking_uri: str) -> str:
    """Register the model logged in ``run_id`` as a version of ``name`` (once: a version from the same run is
    reused), tag it, and point alias ``champion`` at it. Returns the version."""
    import mlflow
    from mlflow import MlflowClient

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
    client.set_registered_model_alias(name, CHAMPION, version)
    return version


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
