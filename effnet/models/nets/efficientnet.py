"""The EfficientNet model (Tan & Le 2019), built from a :class:`~effnet.models.nets.config.ModelConfig`."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import BLOCKS
from .config import ModelConfig, scale
from .layers import BATCHNORMS, BNSettings, ConvBNAct, SamePad2d
from .lean import set_memory_efficient

# timm-compatible feature taps: the last stage at each stride 2, 4, 8, 16, 32.
FEATURE_STRIDES = (2, 4, 8, 16, 32)


@contextlib.contextmanager
def _frozen_bn_stats(module: nn.Module):
    """During checkpoint recomputation BatchNorm must not update its running statistics a second time:
    momentum 0 leaves them unchanged (batch statistics are still used for the recomputed forward)."""
    bns = [m for m in module.modules() if isinstance(m, BATCHNORMS)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def run_stages(stages: nn.Sequential, x: torch.Tensor, checkpointing: int, taps: set[int] | None = None):
    """Run the stages (blocks of any kind); in the first ``checkpointing`` stages (training only) store each
    block's input alone and recompute the block in backward. Returns the last output, or the outputs of the
    stages in ``taps``.

    Per block, as timm (``checkpoint_seq(blocks, flatten=True)``): the same one extra forward as per stage,
    but backward then holds one block's activations at a time -- the early 112-px blocks dominate the peak."""
    out = []
    ckpt = checkpointing if torch.is_grad_enabled() and stages.training else 0
    for i, stage in enumerate(stages):
        if i < ckpt:
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False,
                               context_fn=lambda b=block: (contextlib.nullcontext(), _frozen_bn_stats(b)))
        else:
            x = stage(x)
        if taps is not None and i in taps:
            out.append(x)
    return x if taps is None else out


def run_blocks(stages: nn.Sequential, x: torch.Tensor, checkpointing: int, taps: tuple[int, ...]) -> list[torch.Tensor]:
    """Run the stages as :func:`run_stages` does (per-block checkpointing of the first ``checkpointing`` stages);
    return the outputs of the blocks whose global index (counted across stages from 0) is in ``taps``, in order.
    A segmenter's encoder taps blocks, not stages: smp's B0 encoder takes one from inside stage 5."""
    out = []
    ckpt = checkpointing if torch.is_grad_enabled() and stages.training else 0
    index = 0
    for i, stage in enumerate(stages):
        for block in stage:
            if i < ckpt:
                x = checkpoint(block, x, use_reentrant=False,
                               context_fn=lambda b=block: (contextlib.nullcontext(), _frozen_bn_stats(b)))
            else:
                x = block(x)
            if index in taps:
                out.append(x)
            index += 1
            if index > taps[-1]:  # the blocks after the last tap feed nothing
                return out
    return out


class LeanTraining:
    """timm's switches for memory-lean training, shared by the classifier and the feature backbone."""

    grad_checkpointing = False
    checkpoint_stages: int | None = None

    def set_grad_checkpointing(self, enable: bool = True, stages: int | None = None):
        """Per-block gradient checkpointing (torch.utils.checkpoint), as timm's ``set_grad_checkpointing``;
        ``stages``: only the blocks of the first ``stages`` stages (the high-resolution ones that hold
        most of the activations), the rest store theirs and are not recomputed."""
        self.grad_checkpointing, self.checkpoint_stages = enable, stages
        return self

    def _checkpointed_stages(self) -> int:
        if not self.grad_checkpointing:
            return 0
        return len(self.blocks) if self.checkpoint_stages is None else self.checkpoint_stages

    def set_memory_efficient(self, enable: bool = True):
        """SiLU / SE gating with custom autograd that recompute in backward instead of storing activations."""
        set_memory_efficient(self, enable)
        return self


def fix_same_padding(model: nn.Module, size: int) -> None:
    """lukemelas' static padding (``ModelConfig.tf_padding_size``): each strided conv pads as TF "SAME" does for
    the side it sees on a ``size`` x ``size`` input, whatever the input (the stem and the blocks register their
    convs in the order they run)."""
    for module in model.modules():
        if isinstance(module, SamePad2d):
            module.size = size
            size = (size + module.stride - 1) // module.stride


class EfficientNet(LeanTraining, nn.Module):
    """Stem conv3x3/s2 -> the stages of the config's table (V1: 7 MBConv stages; V2: Fused-MBConv then MBConv)
    -> head conv1x1 -> global average pool -> dropout -> linear.

    Input (N, in_chans, H, W), any H/W (native: ``config.resolution``); output logits (N, num_classes).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        arch = scale(config)
        bn = BNSettings.of(config).kwargs()
        act = config.activation
        self.stem = ConvBNAct(config.in_chans, arch.stem_channels, 3, 2, activation=act, tf_padding=config.tf_padding, **bn)

        total_blocks = sum(s.repeats for s in arch.stages)
        block_idx = 0
        stages: list[nn.Module] = []
        self.feature_info: list[dict] = []
        stride = 2
        for spec in arch.stages:
            blocks = []
            for i in range(spec.repeats):
                blocks.append(
                    BLOCKS[spec.block](
                        spec.in_channels if i == 0 else spec.out_channels,
                        spec.out_channels,
                        spec.kernel_size,
                        spec.stride if i == 0 else 1,
                        spec.expand_ratio,
                        spec.se_ratio,
                        # Stochastic depth grows linearly with block index (official drop_connect_rate).
                        drop_path_rate=config.drop_path_rate * block_idx / total_blocks,
                        activation=act,
                        tf_padding=config.tf_padding,
                        **bn,
                    )
                )
                block_idx += 1
            stages.append(nn.Sequential(*blocks))
            stride *= spec.stride
            self.feature_info.append(dict(stage=spec.index, num_chs=spec.out_channels, reduction=stride))
        self.blocks = nn.Sequential(*stages)
        self.head = ConvBNAct(arch.stages[-1].out_channels, arch.head_channels, 1, activation=act, **bn)
        self.num_features = arch.head_channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(arch.head_channels, config.num_classes) if config.num_classes > 0 else nn.Identity()
        if config.tf_padding and config.tf_padding_size:
            fix_same_padding(self, config.tf_padding_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # Official initializers: conv N(0, sqrt(2/fan_out)); dense U(-1/sqrt(out), 1/sqrt(out)).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> head activations (N, num_features, H/32, W/32)."""
        x = run_stages(self.blocks, self.stem(x), self._checkpointed_stages())
        return self.head(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, class_names: tuple[str, ...] | None = None) -> None:
        """New zero-initialised head for ``num_classes`` (transfer learning).

        Zeros rather than the from-scratch init: pretrained features are large, and a random head would start
        fine-tuning from confidently wrong logits (the first gradients still reach every class).
        """
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.classifier, nn.Linear):
            nn.init.zeros_(self.classifier.weight)
            nn.init.zeros_(self.classifier.bias)
        self.config = self.config.replace(num_classes=num_classes, class_names=class_names)

    def freeze_backbone(self, freeze: bool = True) -> None:
        """Stop gradients to everything but the classifier (BN running stats still update in train mode)."""
        for name, p in self.named_parameters():
            if not name.startswith("classifier."):
                p.requires_grad_(not freeze)


class EfficientNetFeatures(LeanTraining, nn.Module):
    """Multi-scale backbone: returns the feature maps at strides 2, 4, 8, 16, 32 (list of 5 tensors).

    ``feature_info`` lists ``num_chs`` and ``reduction`` for each output, as timm's ``features_only``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        full = EfficientNet(config)
        self.config = config
        self.stem = full.stem
        self.blocks = full.blocks
        # last stage index at each stride
        taps: dict[int, dict] = {}
        for info in full.feature_info:
            taps[info["reduction"]] = info
        self.feature_info = [taps[s] for s in FEATURE_STRIDES]
        self._tap_stages = {info["stage"] for info in self.feature_info}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return run_stages(self.blocks, self.stem(x), self._checkpointed_stages(), self._tap_stages)
