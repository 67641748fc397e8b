"""Lazy package attributes (PEP 562): a public name's module loads when the name is first read."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` that imports each name from its module.

    The value found is stored in the package, so the hook runs once per name.

    Args:
        package: The package's ``__name__``.
        modules: Each lazy name's module within ``package`` (``"graph.load"``).
    """

    def load(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return load
