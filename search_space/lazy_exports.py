"""Lazy package exports (PEP 562), shared by the ``search_space`` and ``trainables`` package ``__init__``s: a
public name is imported from its submodule on first use, so importing one piece of a package (e.g.
``search_space.registry``) never pulls in the rest (the network builder, the predictors, the training loop)."""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, submodules: dict[str, tuple[str, ...]], namespace: dict
                 ) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose public names live in ``submodules``
    (submodule name -> names). ``namespace`` is the package's ``globals()``: a resolved name is stored there,
    so later look-ups no longer reach ``__getattr__``."""
    exports = {name: module for module, names in submodules.items() for name in names}

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return list(exports), __getattr__, __dir__
