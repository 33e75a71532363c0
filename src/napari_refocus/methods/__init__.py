"""Restoration methods: each a :class:`Method` with a parameter schema, in one registry.

- :mod:`.base` - :class:`Method`, :class:`RefocusResult`, :class:`RunReport`
- :mod:`.params` - the schema helpers (strict keywords, limits, provenance)
- :mod:`.registry` - the explicit list of built-in methods; :func:`register`
- :mod:`.lbdvd`, :mod:`.rl`, :mod:`.learned` - the methods; :mod:`.defocus` - DelpNet maps
- :mod:`.run` - one 2-D image in memory -> :class:`RefocusResult`
"""

from .base import Method, RefocusResult, RunReport
from .registry import BUILTIN, REGISTRY, get_method, list_methods, register, unregister
from .run import iter_refocus, refocus_array

__all__ = ["Method", "RefocusResult", "RunReport", "BUILTIN", "REGISTRY", "get_method", "list_methods",
           "register", "unregister", "iter_refocus", "refocus_array"]
