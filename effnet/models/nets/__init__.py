"""The networks, the ground floor: the paper's tables as data (``config``, ``detector_config``), layers and MBConv
blocks, EfficientNet and its feature backbone, BiFPN and EfficientDet. Nothing here knows about names, files or
weights (:mod:`effnet.models.zoo`)."""
