"""Names a package exports, imported on first use (PEP 562): ``import effnet`` and ``effnet --help`` stay free of
torch until a model is built; ``effnet.deploy`` loads its exporters only when one is used. A submodule is an
attribute as after an eager import (``effnet.deploy.openvino``)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, namespace: dict, exports: dict[str, tuple[str, str]]) -> tuple[Callable, Callable]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a public name to (module, attribute),
    the module absolute or relative to ``package``; each value is cached in ``namespace`` once imported."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            if importlib.util.find_spec(f"{package}.{name}") is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            return importlib.import_module(f"{package}.{name}")  # importing sets it in ``namespace`` too
        module, attr = exports[name]
        value = getattr(importlib.import_module(module, package), attr)
        namespace[name] = value  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*exports, *namespace.get("__all__", ())})

    return __getattr__, __dir__
