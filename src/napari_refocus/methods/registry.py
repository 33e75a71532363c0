"""The registry of restoration methods: one explicit list feeds the widgets, the CLI, batch
and the benchmarks. Nothing registers itself on import; a plugin or a test adds a method
with :func:`register`, and a name can be registered only once.
"""

from __future__ import annotations

from . import lbdvd, learned, rl
from .base import Method

#: The built-in methods, in the order the widgets and ``napari-refocus methods`` list them.
BUILTIN: tuple[Method, ...] = (lbdvd.METHOD, rl.METHOD, *learned.METHODS)

REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method; a name that is already registered is a ValueError."""
    if not isinstance(method, Method):
        raise TypeError(f"register() takes a Method, got {type(method).__name__}")
    if method.name in REGISTRY:
        raise ValueError(f"a method named {method.name!r} is already registered")
    REGISTRY[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Remove a method added with :func:`register` (for plugins and tests)."""
    return REGISTRY.pop(get_method(name).name)


for _m in BUILTIN:
    register(_m)
del _m


def list_methods() -> list[Method]:
    """Registered methods, ``lbdvd`` first."""
    return list(REGISTRY.values())


def get_method(name) -> Method:
    """The registered method called ``name`` (a Method is returned as it is)."""
    if isinstance(name, Method):
        return name
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}") from None
