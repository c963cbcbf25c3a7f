"""effnet: the EfficientNet family (Tan & Le, ICML 2019) with compound scaling as a method.

The names below are imported on first use (PEP 562), so ``import effnet`` -- and with it ``effnet --help``,
``--version`` and ``list`` -- does not load torch until a model is actually built.
"""

from __future__ import annotations

from .lazy import lazy_exports
from .models import EXPORTS as _EXPORTS  # the public names and where they live (importing it loads no torch)

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it (tool.setuptools.dynamic)

__all__ = [*_EXPORTS, "__version__"]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
