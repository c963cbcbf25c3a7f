"""Semantic segmentation on the EfficientNet encoders: U-Net (Ronneberger et al. 2015) and FPN (Kirillov et al.'s
panoptic FPN head, 2019), built from a :class:`~effnet.models.nets.segmenter_config.SegmenterConfig`.

Laid out as segmentation_models_pytorch (smp) lays them, module for module and name for name (``decoder.blocks.0
.conv1.0``, ``decoder.p4.skip_conv``, ``segmentation_head.0``), so that a model trained in smp imports by renaming
its encoder's keys alone. The output is smp's too: one logits tensor (N, num_classes, H, W) at the input's size,
not torchvision's ``{"out": ...}`` dict -- a plain tensor is what ONNX, OpenVINO and ExecuTorch export, and what
smp users' losses and metrics expect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UsageError
from .efficientnet import EfficientNet, LeanTraining, run_blocks
from .segmenter_config import OUTPUT_STRIDE, SegmenterConfig


class SegmentationEncoder(LeanTraining, nn.Module):
    """The classifier's stem and blocks (same names: ImageNet weights load unchanged); returns the five feature
    maps at strides 2 (the stem's output), 4, 8, 16 and 32 (the blocks in ``taps``)."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        full = EfficientNet(config.backbone)
        self.stem, self.blocks, self.taps = full.stem, full.blocks, config.taps
        channels = [full.stem.conv.out_channels]
        flat = [block for stage in full.blocks for block in stage]
        for tap in self.taps:
            channels.append(_out_channels(flat[tap]))
        self.out_channels = tuple(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        return [x, *run_blocks(self.blocks, x, self._checkpointed_stages(), self.taps)]


def _out_channels(block: nn.Module) -> int:
    """A block's output channels: those of its last convolution."""
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


class Conv2dReLU(nn.Sequential):
    """conv3x3 (no bias) -> BatchNorm -> ReLU: smp's ``Conv2dReLU`` with its default batch norm."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


class UnetBlock(nn.Module):
    """Upsample (nearest, to the skip's size) -> concatenate the skip -> two conv3x3-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels)
        self.conv2 = Conv2dReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UnetDecoder(nn.Module):
    """Five blocks from the stride-32 map up to the input's size, each fed the encoder map of its stride (smp's
    ``UnetDecoder`` without its optional centre block and attention, which are off by default there too)."""

    def __init__(self, encoder_channels: tuple[int, ...], decoder_channels: tuple[int, ...]) -> None:
        super().__init__()
        head, *skips = encoder_channels[::-1]  # stride 32 first
        ins = (head, *decoder_channels[:-1])
        skip_channels = (*skips, 0)  # the last block (stride 1) has no skip
        self.blocks = nn.ModuleList(UnetBlock(i, s, o) for i, s, o in zip(ins, skip_channels, decoder_channels))

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x, *skips = features[::-1]
        sizes = [tuple(f.shape[-2:]) for f in skips] + [size]
        for i, block in enumerate(self.blocks):
            x = block(x, sizes[i], skips[i] if i < len(skips) else None)
        return x


class Conv3x3GNReLU(nn.Module):
    """conv3x3 -> GroupNorm(32) -> ReLU, optionally followed by a bilinear x2 upsampling (smp's FPN)."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.block = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                                   nn.GroupNorm(32, out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True) if self.upsample else x


class SegmentationBlock(nn.Module):
    """``n`` upsampling conv blocks bring a pyramid level to stride 4 (one plain block when already there)."""

    def __init__(self, in_channels: int, out_channels: int, n_upsamples: int) -> None:
        super().__init__()
        blocks = [Conv3x3GNReLU(in_channels, out_channels, upsample=n_upsamples > 0)]
        blocks += [Conv3x3GNReLU(out_channels, out_channels, upsample=True) for _ in range(1, n_upsamples)]
        self.block = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class FPNBlock(nn.Module):
    """Top-down step: the coarser level upsampled x2 (nearest) plus a 1x1 projection of the encoder map."""

    def __init__(self, pyramid_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_channels, pyramid_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest") + self.skip_conv(skip)


class FPNDecoder(nn.Module):
    """P5..P2 from the stride 32..4 maps, each brought to stride 4 by its segmentation block, summed, Dropout2d
    (smp's ``FPNDecoder`` with its default ``merge_policy="add"``)."""

    def __init__(self, encoder_channels: tuple[int, ...], pyramid: int, segmentation: int, dropout: float) -> None:
        super().__init__()
        c5, c4, c3, c2 = encoder_channels[::-1][:4]
        self.p5 = nn.Conv2d(c5, pyramid, kernel_size=1)
        self.p4, self.p3, self.p2 = FPNBlock(pyramid, c4), FPNBlock(pyramid, c3), FPNBlock(pyramid, c2)
        self.seg_blocks = nn.ModuleList(SegmentationBlock(pyramid, segmentation, n) for n in (3, 2, 1, 0))
        self.dropout = nn.Dropout2d(p=dropout)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        c2, c3, c4, c5 = features[-4:]
        p5 = self.p5(c5)
        p4 = self.p4(p5, c4)
        p3 = self.p3(p4, c3)
        p2 = self.p2(p3, c2)
        levels = [block(p) for block, p in zip(self.seg_blocks, (p5, p4, p3, p2))]
        return self.dropout(torch.stack(levels).sum(dim=0))


class SegmentationHead(nn.Sequential):
    """conv (3x3 after a U-Net, 1x1 after an FPN) to the classes, then the FPN's bilinear x4 upsampling."""

    def __init__(self, in_channels: int, num_classes: int, kernel_size: int, upsampling: int) -> None:
        up = (nn.Upsample(scale_factor=upsampling, mode="bilinear", align_corners=True) if upsampling > 1
              else nn.Identity())
        super().__init__(nn.Conv2d(in_channels, num_classes, kernel_size, padding=kernel_size // 2), up)


class Segmenter(nn.Module):
    """Encoder -> decoder -> head. Input (N, 3, H, W) with H and W multiples of 32; output logits
    (N, num_classes, H, W). ``Segmenter.predict`` is not here: :class:`effnet.segment.Predictor` takes images of
    any size."""

    def __init__(self, config: SegmenterConfig, encoder: SegmentationEncoder | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else SegmentationEncoder(config)
        channels = self.encoder.out_channels
        if config.decoder == "unet":
            self.decoder = UnetDecoder(channels, config.decoder_channels)
            self.segmentation_head = SegmentationHead(config.decoder_channels[-1], config.num_classes, 3, 1)
        else:
            self.decoder = FPNDecoder(channels, config.pyramid_channels, config.segmentation_channels,
                                      config.decoder_dropout)
            self.segmentation_head = SegmentationHead(config.segmentation_channels, config.num_classes, 1,
                                                      config.upsampling)
        init_decoder(self.decoder)
        init_head(self.segmentation_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        if isinstance(size[0], int) and (size[0] % OUTPUT_STRIDE or size[1] % OUTPUT_STRIDE):
            raise UsageError(f"a segmenter takes sides that are multiples of {OUTPUT_STRIDE}, got {size[0]}x{size[1]} "
                             "(effnet.segment.Predictor pads any image)")
        return self.segmentation_head(self.decoder(self.encoder(x), size))

    def reset_head(self, num_classes: int, class_names: tuple[str, ...] | None = None) -> None:
        """A new head for ``num_classes`` (transfer learning), initialised as smp initialises its head."""
        old = self.segmentation_head
        conv = old[0]
        self.segmentation_head = SegmentationHead(conv.in_channels, num_classes, conv.kernel_size[0],
                                                  self.config.upsampling if self.config.decoder == "fpn" else 1)
        init_head(self.segmentation_head)
        self.config = self.config.replace(num_classes=num_classes, class_names=class_names)

    def freeze_backbone(self, freeze: bool = True) -> None:
        """Train the decoder and head only (``--freeze-backbone``)."""
        for p in self.encoder.parameters():
            p.requires_grad_(not freeze)

    def set_grad_checkpointing(self, enable: bool = True, stages: int | None = None):
        self.encoder.set_grad_checkpointing(enable, stages)
        return self

    def set_memory_efficient(self, enable: bool = True):
        self.encoder.set_memory_efficient(enable)
        return self


def init_decoder(module: nn.Module) -> None:
    """smp's decoder initialisation: Kaiming-uniform (fan_in, ReLU) convs with zero bias, BN/GN to identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_head(module: nn.Module) -> None:
    """smp's head initialisation: Xavier-uniform convs, zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
