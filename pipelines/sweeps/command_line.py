"""The command line of the sweeps: :func:`sweep_parser` builds a sweep's argument parser from its options (the
keywords of the options every sweep has in :data:`OPTIONS`), :func:`help_text` turns a module docstring into the
``--help`` text.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

_TRACKING = "MLflow tracking URI (default MLFLOW_TRACKING_URI, else "
#: Keywords of the options every sweep has (a sweep adds or overrides keywords, e.g. a help text).
OPTIONS: dict[str, dict[str, Any]] = {
    "--set": {"dest": "sets", "action": "append", "default": [], "metavar": "KEY=VALUE"},
    "--resume": {"action": "store_true", "help": "require an existing run in --output and continue it"},
    "--tracking-uri": {"default": None,
                       "help": _TRACKING + "MLflow's default sqlite:///mlflow.db in the working directory)"},
    "--address": {"default": None, "help": "Ray address (default RAY_ADDRESS, else a local Ray)"},
    "--no-dashboard": {"action": "store_true", "help": "local Ray without the dashboard"},
}


def help_text(doc: str) -> str:
    """A module docstring as ``--help`` prints it: without reST markup (double backticks, bold, roles)."""
    text = doc.replace("``", "").replace("**", "")
    for role in (":func:", ":class:", ":meth:"):
        text = text.replace(role, "")
    return text.replace("`", "")


def sweep_parser(prog: str, doc: str, options: Mapping[str, Mapping[str, Any]]) -> argparse.ArgumentParser:
    """The parser of a sweep: ``options`` (flag -> keywords, in ``--help`` order) over :data:`OPTIONS`."""
    parser = argparse.ArgumentParser(prog=prog, description=help_text(doc),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, keywords in options.items():
        parser.add_argument(flag, **{**OPTIONS.get(flag, {}), **keywords})
    return parser
