"""Old module names kept importable after a module moves (shared by the ``trainables`` and ``pipelines``
package ``__init__``s).

Files written before a move name modules by their old path: an MLflow pyfunc model's ``loader_module``
(``trainables.export``), pickles in Ray Tune's experiment state, a user's ``python -m pipelines.model_registry``.
:func:`keep_old_names` installs a finder that answers an old name with a stand-in module forwarding every
attribute to the module's new home, so ``import``, ``pickle`` and ``python -m`` (via ``get_code``) all reach the
one real module; nothing is loaded twice.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types


class _Forwarder(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        target = importlib.import_module(self.new)
        module = types.ModuleType(spec.name, target.__doc__)
        module.__getattr__ = lambda name: getattr(target, name)  # PEP 562: every attribute is the new module's
        return module

    def exec_module(self, module) -> None:
        pass

    def get_code(self, fullname: str):
        """The new module's code, so ``python -m <old name>`` runs it as ``__main__``."""
        return importlib.util.find_spec(self.new).loader.get_code(self.new)

    def is_package(self, fullname: str) -> bool:
        return False


class _MovedModules(importlib.abc.MetaPathFinder):
    def __init__(self, moved: dict[str, str]):
        self.moved = moved

    def find_spec(self, fullname, path=None, target=None):
        new = self.moved.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Forwarder(new))


def keep_old_names(package: str, moved: dict[str, str]) -> None:
    """Make ``<package>.<old>`` import as ``<package>.<new>`` for every ``old -> new`` in ``moved`` (names
    relative to ``package``). Idempotent per package."""
    full = {f"{package}.{old}": f"{package}.{new}" for old, new in moved.items()}
    for finder in sys.meta_path:
        if isinstance(finder, _MovedModules) and set(finder.moved) == set(full):
            return
    sys.meta_path.append(_MovedModules(full))
