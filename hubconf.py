"""torch.hub entry points: ``torch.hub.load("path/to/effnet", "efficientnet_b0", source="local")``."""

dependencies = ["torch", "torchvision", "safetensors"]

from effnet.models.nets.families import CLASSIFIERS as _CLASSIFIERS  # noqa: E402
from effnet.models.zoo.registry import create_model as _create_model  # noqa: E402


def _entry(name):
    def build(**kwargs):
        return _create_model(name, **kwargs)

    build.__name__ = name
    build.__doc__ = f"{name}; keyword arguments as effnet.create_model."
    return build


for _name in _CLASSIFIERS:  # both families: efficientnet_b0 ... efficientnetv2_xl
    globals()[_name] = _entry(_name)
