"""A name -> entry mapping with a registering decorator: the project's extension points (operators,
objectives, OOD scores, protocols, ...) are each one :class:`Registry`."""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


class Registry(dict):
    """``dict`` of name -> entry (a function or class); insertion order is the canonical order.

    >>> ACTIVATIONS = Registry("activation")
    >>> @ACTIVATIONS.register("double")
    ... def double(x): return 2 * x
    >>> ACTIVATIONS.lookup("double")(3)
    6
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
        """The entry of ``name``; an unknown name is a one-line ``ValueError`` listing the valid ones."""
        if name not in self:
            raise ValueError(f"{self.kind}: unknown {name!r}; valid: {', '.join(self)}")
        return self[name]
