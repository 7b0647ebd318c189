"""The MLflow model registry side of DCSOD: log the champion, register it, look it up.

``python -m pipelines.nas.model_registry show dcsod-digits@champion`` prints the registered model's genotype (one
line per stage cell, :func:`format_info`) and metrics (``NAME@ALIAS`` or ``NAME/VERSION``; ``--json``: all of
it as JSON, the genotype in full); the tracking URI is ``--tracking-uri``, else
``MLFLOW_TRACKING_URI``, else MLflow's default. Unknown models print one line and exit 2.

>>> import mlflow
>>> model = mlflow.pytorch.load_model("models:/dcsod-digits@champion")   # doctest: +SKIP
>>> model.score(images)   # (N,) MSP, higher = more in-distribution; images (N, C, H, W) in [0, 1]  # doctest: +SKIP
>>> served = mlflow.pyfunc.load_model("models:/dcsod-digits@champion")   # doctest: +SKIP
>>> served.predict(images, params={"pixels": "auto"})  # logits, predicted_class, score_msp/energy  # doctest: +SKIP

The same through HTTP: ``mlflow models serve -m models:/dcsod-digits@champion --env-manager local -p 5001``, then
POST ``{"inputs": <(N, C, H, W) nested lists>, "params": {"pixels": "auto"}}`` to ``/invocations``; the pixel rule
(JSON has no dtypes) is :mod:`trainables.image.export`'s.
"""
from __future__ import annotations

import argparse
import json
import sys

CHAMPION = "champion"
MODEL_URI_TAG = "dcsod.model_uri"


def log_model(run_id: str, model, example, tracking_uri: str, code_paths: list[str]) -> str:
    """Log ``model`` (a ScoredClassifier whose network is a DCSODNet) as artifact ``model`` of run ``run_id``;
    return its model URI, also stored as the run tag ``dcsod.model_uri``.

    The MLflow model has two flavours: ``pytorch`` (``mlflow.pytorch.load_model`` returns the ScoredClassifier
    itself; a pickle, loadable outside the repository through ``code_paths``) and ``python_function``
    (``mlflow.pyfunc`` and ``mlflow models serve``: :class:`trainables.image.export.ServedClassifier`, rebuilt from a
    state dict and the genotype JSON, no pickle). Its signature (:func:`served_signature`) has no input schema
    on purpose: MLflow would cast every input to one dtype, which is exactly what must not happen to pixels
    (see :mod:`trainables.image.export` for the rule). ``example`` ``(N, C, H, W)`` float in [0, 1] checks that the
    served flavour gives the model's logits before anything is logged."""
    import mlflow
    from mlflow.models import Model

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = Model.log(None, flavor=TorchWithServedFlavour, name="model", flavor_name="pytorch",
                         serialization_format="pickle", pytorch_model=model, example=example,
                         code_paths=code_paths, metadata=served_metadata(model))
        mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def served_signature(num_classes: int):
    """The served model's MLflow signature: no input schema (pixels keep their dtype, see :func:`log_model`),
    params ``pixels`` (string, default ``auto``), outputs ``logits`` (N, num_classes) float32,
    ``predicted_class`` (N,) int64, ``score_msp`` and ``score_energy`` (N,) float64."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    outputs = Schema([TensorSpec(np.dtype("float32"), (-1, num_classes), "logits"),
                      TensorSpec(np.dtype("int64"), (-1,), "predicted_class"),
                      TensorSpec(np.dtype("float64"), (-1,), "score_msp"),
                      TensorSpec(np.dtype("float64"), (-1,), "score_energy")])
    return ModelSignature(inputs=None, outputs=outputs, params=ParamSchema([ParamSpec("pixels", "string", "auto")]))


def served_metadata(model) -> dict:
    """MLmodel ``metadata``: the input contract in words and the class names (index = predicted class)."""
    from trainables.image.export import SERVED_PIXEL_SCALES

    channels = int(model.mean.shape[1])
    return {"input": f"images (N, {channels}, H, W): integer pixels 0..255 or floats in [0, 1]",
            "pixels": f"params pixels: {' | '.join(SERVED_PIXEL_SCALES)}; auto: integers (JSON numbers without "
                      "a decimal point) are 0..255, floats must be in [0, 1], integers with maximum 1 are "
                      "refused as ambiguous; anything else is HTTP 400",
            "class_names": list(model.class_names)}


class TorchWithServedFlavour:
    """The flavour "module" :func:`log_model` hands to ``mlflow.models.Model.log`` (which calls
    :meth:`save_model` on a local directory, then uploads it as a logged model)."""

    PYFUNC_DATA = "served"

    @staticmethod
    def save_model(path: str, mlflow_model, pytorch_model, example, code_paths: list[str],
                   serialization_format: str = "pickle") -> None:
        """Write the ``pytorch`` flavour with ``mlflow.pytorch.save_model``, then replace the
        ``python_function`` flavour it adds by the served one (:func:`trainables.image.export.save_served`, loader
        ``trainables.image.export``) and check that it reproduces ``pytorch_model``'s logits on ``example``."""
        import os

        import mlflow
        import numpy as np
        import torch
        from mlflow import pyfunc

        from trainables.image.export import load_served, save_served

        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]
        num_classes = int(pytorch_model.net.classifier.out_features)
        mlflow.pytorch.save_model(pytorch_model, path, mlflow_model=mlflow_model, code_paths=code_paths,
                                  signature=served_signature(num_classes), pip_requirements=requirements,
                                  serialization_format=serialization_format)
        save_served(pytorch_model, os.path.join(path, TorchWithServedFlavour.PYFUNC_DATA))
        check_served(load_served(os.path.join(path, TorchWithServedFlavour.PYFUNC_DATA)), pytorch_model, example)
        conf = mlflow_model.flavors.pop(pyfunc.FLAVOR_NAME)
        pyfunc.add_to_model(mlflow_model, loader_module="trainables.image.export",
                            data=TorchWithServedFlavour.PYFUNC_DATA,
                            code=conf.get(pyfunc.CODE), conda_env=conf.get(pyfunc.ENV, {}).get(pyfunc.EnvType.CONDA),
                            python_env=conf.get(pyfunc.ENV, {}).get(pyfunc.EnvType.VIRTUALENV))
        mlflow_model.save(os.path.join(path, "MLmodel"))


def check_served(served, model, example) -> None:
    """Raise ``RuntimeError`` unless ``served`` (rebuilt from the served files) gives ``model``'s logits on
    ``example`` (to float32 rounding)."""
    import torch

    with torch.no_grad():
        want, got = model(example), served(example)
    if not torch.allclose(got, want, rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"the served flavour does not reproduce the model: logits differ by up to "
                           f"{float((got - want).abs().max()):.3g}")


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

    from pipelines.common.mlflow_runs import check_tracking_uri

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


def cell_line(cell) -> str:
    """One cell (a :class:`search_space.genotype.Cell`) in one line: each live operator vertex as
    ``v2=conv3x3(v0,v1)`` (operator applied to its concatenated predecessors), then ``out=cat(...)`` of the leaves,
    then ``dead: ...`` for vertices no path from ``v0`` reaches (built without them)."""
    pruned = cell.pruned()
    ops = [f"v{i}={cell.ops[i - 1]}({','.join(f'v{j}' for j in pruned.predecessors(i))})"
           for i in sorted(pruned.live - {0})]
    dead = [f"v{i}" for i in range(1, cell.k) if i not in pruned.live]
    return " ".join(ops + [f"-> out=cat({','.join(f'v{v}' for v in pruned.leaves())})"]
                    + ([f"(dead: {','.join(dead)})"] if dead else []))


def architecture_lines(genotype: dict | None) -> list[str]:
    """The architecture of a registered version, compactly: for a genotype its wiring and one line per stage
    cell (:func:`cell_line`); a standard model (``{"model": ...}``) as its one-line JSON."""
    from search_space.architecture import architecture_json, parse_architecture
    from search_space.genotype import Genotype

    if genotype is None:
        return ["architecture: unknown (no genotype tag)"]
    arch = parse_architecture(genotype)
    if not isinstance(arch, Genotype):
        return [f"architecture: {architecture_json(arch)}"]
    wiring = "residual (x + proj(cat))" if arch.residual else "plain (proj(cat), eq. 4.6)"
    return [f"genotype: k={arch.k}, cell wiring {wiring}"] + [
        f"  stage {n}: {cell_line(cell)}" for n, cell in enumerate(arch.cells, 1)]


def format_info(info: dict) -> str:
    """:func:`show`'s answer for a terminal: name, version, aliases and run, the architecture
    (:func:`architecture_lines`), then one metric per line."""
    aliases = " ".join(f"@{a}" for a in info["aliases"])
    lines = [f"{info['name']} version {info['version']}{' ' + aliases if aliases else ''}  run {info['run_id']}",
             f"arch_hash: {info['arch_hash']}", *architecture_lines(info["genotype"]), "metrics:"]
    width = max((len(k) for k in info["metrics"]), default=0)
    lines += [f"  {k:<{width}}  {v:.6g}" for k, v in info["metrics"].items()]
    return "\n".join(lines + [f"source: {info['source']}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.nas.model_registry",
                                     description="Look up registered DCSOD models")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("show", help="print a registered model's genotype and metrics")
    p.add_argument("ref", help="NAME@ALIAS (e.g. dcsod-digits@champion), NAME/VERSION or NAME")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--json", action="store_true", help="print everything as JSON (the genotype in full)")
    args = parser.parse_args(argv)
    try:
        info = show(args.ref, args.tracking_uri)
        text = json.dumps(info, indent=2) if args.json else format_info(info)  # a malformed genotype tag: one line
    except (LookupError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
