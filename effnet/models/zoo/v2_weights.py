"""The published EfficientNetV2 weights, kept as data (rows); :mod:`~effnet.models.zoo.classifier_weights` turns
them into registry entries beside EfficientNet's.

Sources of the facts (nothing here is measured by this package):
- timm: its pretrained cfgs in ``timm/models/efficientnet.py`` (URL, ``test_input_size``, crop, interpolation,
  mean/std, ``num_classes``) and ``results/results-imagenet.csv`` of huggingface/pytorch-image-models (top-1 and
  params, measured at that test size and crop). The in21k sets keep their ImageNet-21k head (21843 classes): no
  ImageNet-1k top-1 is published for them; their params are the architecture's with that head.
- torchvision: ``torchvision.models.EfficientNet_V2_{S,M,L}_Weights.IMAGENET1K_V1`` (URL, ``acc@1``, ``num_params``,
  transforms: crop = resize, so crop_pct 1.0).

BatchNorm eps and padding, as the builders that made the weights set them: timm's ``tf_efficientnetv2_*`` are ports
of the official TF checkpoints (google/automl efficientnetv2): eps 1e-3 and TF "SAME" padding; timm's
``efficientnetv2_rw_*`` were trained in PyTorch (eps 1e-5, symmetric padding); torchvision builds all three V2 with
``BatchNorm2d(eps=1e-03)`` and symmetric padding (``torchvision_bn_eps``).

Left out: timm's ``gc_efficientnetv2_rw_t.agc_in1k`` (its blocks use global-context attention in place of
squeeze-excitation, a different block effnet does not build) and the two ``tf_efficientnetv2_b3`` ImageNet-21k sets
(``in21k``, ``in21k_ft_in1k``), published on the Hugging Face Hub only: no sha256 of their files is published
where this package could check it, and every row here carries one.

timm evaluates tf_efficientnetv2_m/l/xl with ``crop_mode="squash"`` (both sides resized to the test size, no
crop); effnet's eval transform resizes the short side and center-crops, which at crop_pct 1.0 differs only in the
borders of a non-square photo.
"""

from __future__ import annotations

from .published import BIC, BIL, IN, TF  # the rows' shorthand, shared with V1's table

IN21K = 21843  # classes of the ImageNet-21k (fall 2011) heads

_EFFV2 = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-effv2-weights/"
_GH = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"

# timm: (effnet model, tag, host, file, top-1 or None, params M, test size, crop, interpolation, mean/std, classes).
# Tags "tf_*" are timm's TF ports (timm's tag with effnet's tf_ prefix: tf_efficientnetv2_s.in21k_ft_in1k is
# efficientnetv2_s.tf_in21k_ft_in1k); the others are timm's own as timm tags them.
TIMM_V2 = [
    ("efficientnetv2_b0", "tf_in1k", _EFFV2, "tf_efficientnetv2_b0-c7cc451f.pth", 78.358, 7.14, 224, 0.875, BIC, IN, 1000),
    ("efficientnetv2_b1", "tf_in1k", _EFFV2, "tf_efficientnetv2_b1-be6e41b0.pth", 79.462, 8.14, 240, 0.882, BIC, IN, 1000),
    ("efficientnetv2_b2", "tf_in1k", _EFFV2, "tf_efficientnetv2_b2-847de54e.pth", 80.194, 10.10, 260, 0.89, BIC, IN, 1000),
    ("efficientnetv2_b3", "tf_in1k", _EFFV2, "tf_efficientnetv2_b3-57773f13.pth", 81.97, 14.36, 300, 0.904, BIC, IN, 1000),
    ("efficientnetv2_s", "tf_in1k", _EFFV2, "tf_efficientnetv2_s-eb54923e.pth", 83.9, 21.46, 384, 1.0, BIC, TF, 1000),
    ("efficientnetv2_s", "tf_in21k_ft_in1k", _EFFV2, "tf_efficientnetv2_s_21ft1k-d7dafa41.pth", 84.288, 21.46, 384,
     1.0, BIC, TF, 1000),
    ("efficientnetv2_s", "tf_in21k", _EFFV2, "tf_efficientnetv2_s_21k-6337ad01.pth", None, 48.16, 384, 1.0, BIC, TF,
     IN21K),
    ("efficientnetv2_m", "tf_in1k", _EFFV2, "tf_efficientnetv2_m-cc09e0cd.pth", 85.204, 54.14, 480, 1.0, BIC, TF, 1000),
    ("efficientnetv2_m", "tf_in21k_ft_in1k", _EFFV2, "tf_efficientnetv2_m_21ft1k-bf41664a.pth", 86.0, 54.14, 480,
     1.0, BIC, TF, 1000),
    ("efficientnetv2_m", "tf_in21k", _EFFV2, "tf_efficientnetv2_m_21k-361418a2.pth", None, 80.84, 480, 1.0, BIC, TF,
     IN21K),
    ("efficientnetv2_l", "tf_in1k", _EFFV2, "tf_efficientnetv2_l-d664b728.pth", 85.664, 118.52, 480, 1.0, BIC, TF, 1000),
    ("efficientnetv2_l", "tf_in21k_ft_in1k", _EFFV2, "tf_efficientnetv2_l_21ft1k-60127a9d.pth", 86.802, 118.52, 480,
     1.0, BIC, TF, 1000),
    ("efficientnetv2_l", "tf_in21k", _EFFV2, "tf_efficientnetv2_l_21k-91a19ec9.pth", None, 145.22, 480, 1.0, BIC, TF,
     IN21K),
    ("efficientnetv2_xl", "tf_in21k_ft_in1k", _EFFV2, "tf_efficientnetv2_xl_in21ft1k-06c35c48.pth", 86.748, 208.12,
     512, 1.0, BIC, TF, 1000),
    ("efficientnetv2_xl", "tf_in21k", _EFFV2, "tf_efficientnetv2_xl_in21k-fd7e8abf.pth", None, 234.82, 512, 1.0, BIC,
     TF, IN21K),
    ("efficientnetv2_rw_t", "ra2_in1k", _GH, "efficientnetv2_t_agc-3620981a.pth", 82.35, 13.65, 288, 1.0, BIC, IN, 1000),
    ("efficientnetv2_rw_s", "ra2_in1k", _GH, "efficientnet_v2s_ra2_288-a6477665.pth", 83.808, 23.94, 384, 1.0, BIC, IN,
     1000),
    ("efficientnetv2_rw_m", "agc_in1k", _GH, "efficientnetv2_rw_m_agc-3d90cb1e.pth", 84.812, 53.24, 416, 1.0, BIC, IN,
     1000),
]

# torchvision: (effnet model, tag, file, acc@1, num_params, crop, resize, interpolation, mean/std)
TORCHVISION_V2 = [
    ("efficientnetv2_s", "tv_in1k", "efficientnet_v2_s-dd5fe13b.pth", 84.228, 21458488, 384, 384, BIL, IN),
    ("efficientnetv2_m", "tv_in1k", "efficientnet_v2_m-dc08266a.pth", 85.112, 54139356, 480, 480, BIL, IN),
    ("efficientnetv2_l", "tv_in1k", "efficientnet_v2_l-59c71312.pth", 85.808, 118515272, 480, 480, BIC, TF),
]

# pretrained=True: torchvision's for S/M/L (its DEFAULT), else the best timm set with an ImageNet-1k head
V2_DEFAULT_TAGS: dict[str, str] = {
    **{f"efficientnetv2_b{i}": "tf_in1k" for i in range(4)},
    **{f"efficientnetv2_{s}": "tv_in1k" for s in "sml"},
    "efficientnetv2_xl": "tf_in21k_ft_in1k",
    "efficientnetv2_rw_t": "ra2_in1k",
    "efficientnetv2_rw_s": "ra2_in1k",
    "efficientnetv2_rw_m": "agc_in1k",
}
