"""The Ray a pipeline runs on, the same for every pipeline: ``--address``, else ``RAY_ADDRESS`` (set by
``ray job submit``), else a local Ray started here; and one check of a trial's resources against it."""
from __future__ import annotations

import logging
import os
import sys

from pipelines.common.settings import ConfigError


def ray_address(address: str | None = None) -> str | None:
    """``address``, else ``RAY_ADDRESS``, else None (a local Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def is_local(address: str | None = None) -> bool:
    return ray_address(address) in (None, "local")


def start_ray(address: str | None = None, dashboard: bool = True) -> None:
    """Connect to the cluster of :func:`ray_address` or start a local Ray (with its dashboard unless
    ``dashboard=False``); nothing if Ray is already initialised. Worker logs stay in the Ray session
    (dashboard, ``ray logs``), not on the driver's console."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    address = ray_address(address)
    kwargs = {"log_to_driver": False}
    if is_local(address):
        kwargs["include_dashboard"] = dashboard
        # "local" starts a new Ray; None would join any cluster `ray start` left running on this machine
        address = "local"
    ray.init(address=address, **kwargs)


def check_resources(need: dict[str, float], local: bool, what: str = "a trial",
                    hints: dict[str, str] | None = None) -> None:
    """``need`` (Ray resource name -> amount, e.g. ``{"CPU": 2, "GPU": 0.25}``) against the cluster's total:
    a one-line :class:`ConfigError` on a local Ray, a warning on a cluster (an autoscaler may add nodes).
    ``hints``: resource name -> what to change (e.g. ``{"GPU": "set resources.gpu=0"}``), appended."""
    import ray

    total = ray.cluster_resources()
    for name, amount in need.items():
        if amount > total.get(name, 0):
            hint = f"; {hints[name]}" if hints and name in hints else ""
            problem = f"{what} needs {amount:g} {name} but the Ray cluster has {total.get(name, 0):g}{hint}"
            if local:
                raise ConfigError(problem)
            print(f"warning: {problem} (trials wait until the cluster has them)", file=sys.stderr)


def quiet_libraries() -> None:
    """Keep the console to progress bars and the summary: no traceback per failed trial (its reason is one
    line on the console and in MLflow, the traceback in Tune's error file); Tune's per-stage 'results here' /
    TensorBoard hints point at session folders (the run's TensorBoard files are under <output>/tune), MLflow's
    pickle notice is expected (the model is a Python module)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0 (no tables)
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # one line per failed trial (StageProgress)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)


def error_line(err: BaseException | str) -> str:
    """``Type: first non-empty line of the message`` of ``err``, or of the exception a Ray task raised; for a
    traceback text (Tune's ``Result.error`` may be the string ``Failure # 1 (occurred at …)`` + traceback, and
    Tune wraps a callback's traceback in a ``TuneError``) the innermost ``Type: message`` line of it."""
    from pipelines.common.mlflow_runs import EXCEPTION_LINE

    err = getattr(err, "cause", None) or err
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, str) or (lines and lines[0].startswith(("Traceback", "Failure #"))):
        raised = [line for line in lines if EXCEPTION_LINE.match(line)]  # the innermost raise comes last
        if lines and lines[0].startswith("Failure #"):  # Tune's header line says nothing about the cause
            lines = lines[1:]
        text = raised[-1] if raised else (lines[0] if lines else "unknown error")
        return " ".join(text.split())[:500]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
