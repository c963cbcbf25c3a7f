"""Which optional extra brings which package: the one place a missing import becomes an install line.

``pip install effnet`` brings what building, training and predicting with a model need; each feature beyond that
is an extra (pyproject.toml). The CLI turns a ``ModuleNotFoundError`` for any package below into one line,
e.g. ``effnet search: needs optuna, which is not installed: pip install 'effnet[search]'``.
"""

from __future__ import annotations

# top-level import name -> (PyPI distribution, extra that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "httpx": ("httpx", "weights"),
    "huggingface_hub": ("huggingface_hub", "weights"),
    "sklearn": ("scikit-learn", "data"),
    "skimage": ("scikit-image", "data"),
    "pycocotools": ("pycocotools", "detect"),
    "onnx": ("onnx", "deploy"),
    "onnxruntime": ("onnxruntime", "deploy"),
    "onnxscript": ("onnxscript", "deploy"),
    "openvino": ("openvino", "deploy"),
    "nncf": ("nncf", "deploy"),
    "executorch": ("executorch", "edge"),
    "torchao": ("executorch", "edge"),
    "fastapi": ("fastapi", "serve"),
    "starlette": ("fastapi", "serve"),
    "pydantic": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "multipart": ("python-multipart", "serve"),
    "python_multipart": ("python-multipart", "serve"),
    "fastapi_offline": ("fastapi-offline", "serve"),
    "prometheus_client": ("prometheus-client", "serve"),
    "optuna": ("optuna", "search"),
    "sqlalchemy": ("optuna", "search"),
    "psycopg": ("psycopg[binary]", "search"),
    "scipy": ("scipy", "search"),
    "torchcam": ("torchcam", "explain"),
}


def install_hint(module: str | None) -> str | None:
    """``"needs optuna: pip install 'effnet[search]'"`` for an optional package, None for anything else."""
    top = (module or "").split(".")[0]
    if top not in OPTIONAL:
        return None
    dist, extra = OPTIONAL[top]
    return f"needs {dist}, which is not installed: pip install 'effnet[{extra}]'"

