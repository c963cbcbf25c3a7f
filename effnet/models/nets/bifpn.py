"""EfficientDet's neck and heads (Tan, Pang & Le, CVPR 2020): the weighted bidirectional feature pyramid
(BiFPN, section 3) and the class/box prediction nets shared across the pyramid levels P3-P7.

The layout (node order, which input feeds which node, module granularity) follows the official
google/automl code and its PyTorch port ``effdet`` so that weights and parameter counts carry over; the code
is our own and reuses the classifier's layers (``ConvBNAct``, TF "SAME" padding arithmetic, activations).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .layers import BNSettings, ConvBNAct, make_activation, same_pad_amount


def bifpn_nodes(min_level: int = 3, max_level: int = 7) -> list[tuple[int, tuple[int, ...]]]:
    """The BiFPN graph as (level, input node ids): a top-down pass then a bottom-up pass (paper Fig. 2d).

    Node ids 0..L-1 are the input levels; each new node gets the next id. Bottom-up nodes also take the
    level's original input (the paper's extra same-level edge).
    """
    ids = {lvl: [i] for i, lvl in enumerate(range(min_level, max_level + 1))}
    nodes, next_id = [], max_level - min_level + 1
    for lvl in range(max_level - 1, min_level - 1, -1):  # top-down
        nodes.append((lvl, (ids[lvl][-1], ids[lvl + 1][-1])))
        ids[lvl].append(next_id)
        next_id += 1
    for lvl in range(min_level + 1, max_level + 1):  # bottom-up
        nodes.append((lvl, (*ids[lvl], ids[lvl - 1][-1])))
        ids[lvl].append(next_id)
        next_id += 1
    return nodes


class MaxPoolDown(nn.Module):
    """3x3 / stride-2 max pooling to the next pyramid level (output ceil(H/2)).

    With ``tf_padding`` the padding is TensorFlow's "SAME" (asymmetric, padded with -inf so padding never wins),
    as the official models; otherwise symmetric padding 1, which gives the same output size.
    """

    def __init__(self, tf_padding: bool) -> None:
        super().__init__()
        self.tf_padding = tf_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tf_padding:
            return F.max_pool2d(x, 3, 2, 1)
        ph, pw = same_pad_amount(x.shape[-2], 3, 2), same_pad_amount(x.shape[-1], 3, 2)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=float("-inf"))
        return F.max_pool2d(x, 3, 2)


class SeparableConv(nn.Module):
    """Depthwise 3x3 -> pointwise 1x1 (-> BatchNorm) (-> activation): every BiFPN and head conv."""

    def __init__(self, in_ch: int, out_ch: int, bias: bool, bn: BNSettings | None,
                 activation: str | None = None) -> None:
        super().__init__()
        self.dw = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        self.pw = nn.Conv2d(in_ch, out_ch, 1, bias=bias)
        self.bn = bn.batchnorm(out_ch) if bn else nn.Identity()
        self.act = make_activation(activation) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pw(self.dw(x))))

    def fold_batchnorm(self, bn: nn.Module | None = None) -> "SeparableConv":
        """In place: ``bn`` (default: its own) folded into the pointwise conv (eval statistics)."""
        bn = self.bn if bn is None else bn
        if isinstance(bn, nn.BatchNorm2d):
            self.pw = fuse_conv_bn_eval(self.pw, bn)
            self.bn = nn.Identity()
        return self


class NearestUp2x(nn.Module):
    """Nearest-neighbour 2x upsampling as a depthwise transposed conv with a 2x2 kernel of ones: exactly the same
    numbers (each output pixel is one input pixel times 1.0). For XNNPACK (ExecuTorch), which has no nearest
    resize: there ``F.interpolate`` stays outside the delegate and cuts a Lite0 detector into 37 pieces, slow to
    lower and to run. Swapped in by :func:`effnet.detect.executorch.xnnpack_friendly`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("ones", torch.ones(channels, 1, 2, 2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.ones.to(x.dtype), stride=2, groups=x.shape[1])


class Resample(nn.Module):
    """Bring one input to a node's level: 1x1 conv + BN when its width differs, then max-pool down or
    nearest-neighbour up (to the exact size of the node's level, so odd sizes work)."""

    def __init__(self, in_ch: int, out_ch: int, direction: int, tf_padding: bool, bias: bool, bn: BNSettings) -> None:
        super().__init__()
        self.conv = None
        if in_ch != out_ch:
            self.conv = ConvBNAct(in_ch, out_ch, 1, activation=None, **bn.kwargs())
            if bias:  # the official models keep the conv bias in front of BN ("redundant bias")
                self.conv.conv.bias = nn.Parameter(torch.zeros(out_ch))
        self.direction = direction  # -1 down (finer input), +1 up (coarser input), 0 same level
        self.down = MaxPoolDown(tf_padding) if direction < 0 else None
        self.channels = out_ch
        self.up2x: nn.Module | None = None  # NearestUp2x for runtimes without nearest resize (see there)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        if self.down is not None:
            return self.down(x)
        if self.direction > 0:
            if self.up2x is not None and tuple(size) == (2 * x.shape[-2], 2 * x.shape[-1]):
                return self.up2x(x)
            return F.interpolate(x, size=size, mode="nearest")
        return x


class FusionNode(nn.Module):
    """One BiFPN node: resample the inputs, fuse them, then activation -> separable conv -> BN.

    Fusion (paper eq. 2, "fast normalized fusion"): O = sum_i w_i I_i / (eps + sum_j w_j) with w = ReLU(w);
    ``sum`` (D6, D7, Lite) adds the inputs unweighted.
    """

    def __init__(self, level: int, inputs: tuple[int, ...], in_info: list[tuple[int, int]], channels: int,
                 fusion: str, activation: str, tf_padding: bool, bias: bool, bn: BNSettings) -> None:
        super().__init__()
        self.level, self.inputs, self.fusion = level, inputs, fusion
        self.resample = nn.ModuleList(
            Resample(in_info[i][1], channels, (level - in_info[i][0]) and (1 if in_info[i][0] > level else -1),
                     tf_padding, bias, bn)
            for i in inputs)
        self.edge_weights = nn.Parameter(torch.ones(len(inputs))) if fusion == "fast" else None
        self.act = make_activation(activation)
        self.conv = SeparableConv(channels, channels, bias, bn)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[self.inputs[0]].shape[-2:]  # the first input is always at this node's level
        nodes = [r(feats[i], size) for i, r in zip(self.inputs, self.resample)]
        if self.edge_weights is not None:
            w = F.relu(self.edge_weights.to(nodes[0].dtype))
            total = w.sum() + 1e-4
            nodes = [n * w[i] / total for i, n in enumerate(nodes)]
        out = nodes[0]
        for node in nodes[1:]:  # effdet stacks and sums: equal to float rounding, and adds every runtime delegates
            out = out + node
        return self.conv(self.act(out))


class BiFPN(nn.Module):
    """Extra levels P6, P7 from the backbone's last map, then ``repeats`` BiFPN cells (paper section 3.3)."""

    def __init__(self, in_channels: list[int], channels: int, repeats: int, fusion: str, activation: str,
                 tf_padding: bool, redundant_bias: bool, bn: BNSettings, min_level: int = 3,
                 max_level: int = 7) -> None:
        super().__init__()
        self.num_levels = max_level - min_level + 1
        self.extra = nn.ModuleList()
        info = [(min_level + i, c) for i, c in enumerate(in_channels)]
        while len(info) < self.num_levels:
            level, ch = info[-1]
            self.extra.append(Resample(ch, channels, -1, tf_padding, redundant_bias, bn))
            info.append((level + 1, channels))
        graph = bifpn_nodes(min_level, max_level)
        self.cells = nn.ModuleList()
        for _ in range(repeats):
            cell_info = list(info)
            nodes = nn.ModuleList()
            for level, inputs in graph:
                nodes.append(FusionNode(level, inputs, cell_info, channels, fusion, activation, tf_padding,
                                        redundant_bias, bn))
                cell_info.append((level, channels))
            self.cells.append(nodes)
            info = [(min_level + i, channels) for i in range(self.num_levels)]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = list(feats)
        for resample in self.extra:
            feats.append(resample(feats[-1]))
        for cell in self.cells:
            for node in cell:
                feats.append(node(feats))
            feats = feats[-self.num_levels:]
        return feats


class HeadNet(nn.Module):
    """Class or box prediction net: ``repeats`` separable convs shared across levels, each followed by a
    BatchNorm *per level* and the activation, then a shared separable conv to anchors x outputs (paper 3.3)."""

    def __init__(self, channels: int, repeats: int, num_levels: int, num_outputs: int, num_anchors: int,
                 activation: str, redundant_bias: bool, bn: BNSettings) -> None:
        super().__init__()
        self.convs = nn.ModuleList(SeparableConv(channels, channels, redundant_bias, None) for _ in range(repeats))
        self.bns = nn.ModuleList(
            nn.ModuleList(bn.batchnorm(channels) for _ in range(repeats))
            for _ in range(num_levels))
        self.act = make_activation(activation)
        self.predict = SeparableConv(channels, num_outputs * num_anchors, True, None)
        self.folded: nn.ModuleList | None = None  # per level: the convs, BatchNorm folded in; predict (inference)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for level, x in enumerate(feats):
            if self.folded is not None:
                *convs, predict = self.folded[level]
                for conv in convs:
                    x = self.act(conv(x))
            else:
                predict = self.predict
                for conv, bn in zip(self.convs, self.bns[level]):
                    x = self.act(bn(conv(x)))
            outputs.append(predict(x))
        return outputs

    def fold_batchnorm(self) -> None:
        """In place, for inference: per level, a copy of the shared convs with that level's BatchNorm folded in,
        and of the output conv (Lite0: 0.4 M weights more). No BatchNorm is left to run, and no weight is used
        twice: XNNPACK refuses an int8 program in which one conv's weights serve several inputs."""
        self.folded = nn.ModuleList(
            nn.ModuleList([*(copy.deepcopy(conv).fold_batchnorm(bn) for conv, bn in zip(self.convs, bns)),
                           copy.deepcopy(self.predict)])
            for bns in self.bns)
        self.convs, self.bns, self.predict = nn.ModuleList(), nn.ModuleList(), None


def _fans(w: torch.Tensor, groups: int = 1) -> tuple[int, int]:
    receptive = w[0][0].numel() if w.dim() > 2 else 1
    return w.size(1) * receptive, w.size(0) * receptive // groups


def init_detector_weights(neck: nn.Module, heads: list[nn.Module], class_head: nn.Module) -> None:
    """The official initialisation: Glorot-uniform convs in the BiFPN, variance-scaling normal convs in the
    heads, zero biases, and the class output bias at -log((1 - pi) / pi) with prior pi = 0.01 (RetinaNet,
    Lin et al. 2017) so that training starts with every anchor confidently background."""
    with torch.no_grad():
        for m in neck.modules():
            if isinstance(m, nn.Conv2d):
                fan_in, fan_out = _fans(m.weight, m.groups)
                m.weight.uniform_(-1, 1).mul_(math.sqrt(3.0 / max(1.0, (fan_in + fan_out) / 2)))
                if m.bias is not None:
                    m.bias.zero_()
        for head in heads:
            for m in head.modules():
                if isinstance(m, nn.Conv2d):
                    fan_in, _ = _fans(m.weight, m.groups)
                    m.weight.normal_(0, math.sqrt(1.0 / max(1.0, fan_in)))
                    if m.bias is not None:
                        m.bias.zero_()
        class_head.predict.pw.bias.fill_(-math.log((1 - 0.01) / 0.01))
        for m in [*neck.modules(), *(x for h in heads for x in h.modules())]:
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
