"""A name -> entry mapping with a registering decorator and one checked way to build an entry: the
project's extension points (operators, objectives, OOD scores, protocols, ...) are each one :class:`Registry`.

The contract, the same for every registry: an entry is a callable (a function or a class) and
``REGISTRY.build(name, *args, **kwargs)`` returns ``entry(*args, **kwargs)``. Every failure on the way is a
:class:`RegistryError` (a ``ValueError``) with a one-line message that starts with the registry kind and the
entry and names what is valid: an unknown name, an unknown or missing argument (checked against the entry's
signature before anything is built), or a ``ValueError``/``TypeError`` the entry itself raises on a bad value.
This module imports nothing of the project, so every layer may use it.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class RegistryError(ValueError):
    """A registry look-up or build failed; the message is one line naming the registry kind and the entry."""


class Registry(dict):
    """``dict`` of name -> entry (a function or class); insertion order is the canonical order.

    >>> ACTIVATIONS = Registry("activation")
    >>> @ACTIVATIONS.register("scale")
    ... def scale(x, factor=2): return factor * x
    >>> ACTIVATIONS.build("scale", 3, factor=3)
    9
    >>> try:
    ...     ACTIVATIONS.build("scale", 3, power=2)
    ... except RegistryError as err:
    ...     print(err)
    activation 'scale': unknown argument(s) power; valid arguments: x, factor
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding an entry under ``name``; a name registered twice is a ``ValueError``."""

        def decorator(entry: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = entry
            return entry

        return decorator

    def lookup(self, name: str):
        """The entry of ``name``; an unknown name is a :class:`RegistryError` listing the valid ones."""
        if name not in self:
            raise RegistryError(f"{self.kind}: unknown {name!r}; valid: {', '.join(self)}")
        return self[name]

    def build(self, name: str, /, *args, **kwargs):
        """``entry(*args, **kwargs)`` for the entry ``name``, arguments checked first (see the module docstring).

        An entry that takes ``**kwargs`` accepts any keyword; a class is checked against its ``__init__``
        (or its ``__signature__`` where it sets one).
        """
        entry = self.lookup(name)
        self._check_arguments(name, entry, args, kwargs)
        try:
            return entry(*args, **kwargs)
        except (ValueError, TypeError) as err:
            raise RegistryError(f"{self.kind} {name!r}: {' '.join(str(err).split())}") from err

    def _check_arguments(self, name: str, entry, args: tuple, kwargs: dict) -> None:
        try:
            signature = inspect.signature(entry)
        except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
            return
        params = signature.parameters.values()
        valid = [p.name for p in params if p.kind not in _VARIADIC and p.kind is not p.POSITIONAL_ONLY]
        prefix = f"{self.kind} {name!r}:"
        suffix = f"; valid arguments: {', '.join(valid) or '(none)'}"
        unknown = [k for k in kwargs if k not in valid]
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):
            raise RegistryError(f"{prefix} unknown argument(s) {', '.join(unknown)}{suffix}")
        try:
            bound = signature.bind_partial(*args, **kwargs)
        except TypeError as err:  # too many positionals, or one given twice
            raise RegistryError(f"{prefix} {err}{suffix}") from None
        missing = [p.name for p in params
                   if p.default is p.empty and p.kind not in _VARIADIC and p.name not in bound.arguments]
        if missing:
            raise RegistryError(f"{prefix} missing required argument(s) {', '.join(missing)}{suffix}")
