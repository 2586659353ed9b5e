"""The fast student: a small U-Net at the frames' native 64x64, distilled from a trained PiCANet.

About 60 MFLOPs per frame at width 16 (PiCANet LLL at 64 px: ~2 GFLOPs), so online RL can call it
every env step. Three stride-2 stages down to 1/8, a dilated context conv there, and bilinear
up-sampling with skip connections back to full resolution, where a 3x3 conv on the image itself
keeps the blobs' edges sharp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.cli import option
from saliency.picanet import SIDE_BIAS


@dataclass
class StudentConfig:
    """Architecture of the student; stored as a plain dict inside every student checkpoint."""

    width: int = option(16, "channels of the first stage (doubling per stage)")
    input_size: int = option(64, "frames are resized to this square size (native: 64)")

    def validate(self) -> "StudentConfig":
        if self.width < 4:
            raise ValueError(f"student width must be >= 4, got {self.width}")
        if self.input_size < 16 or self.input_size % 8:
            raise ValueError(f"student input_size must be a multiple of 8 and >= 16, got {self.input_size}")
        return self


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class StudentNet(nn.Module):
    """`forward(x [B, 3, S, S] in [0, 1])` -> [logits [B, 1, S, S]] (a one-element list, like PiCANet's sides)."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg.validate()
        w = cfg.width
        self.stem = conv_bn(3, w // 2)  # full resolution
        self.down1 = conv_bn(3, w, stride=2)  # 1/2
        self.down2 = nn.Sequential(conv_bn(w, 2 * w, stride=2), conv_bn(2 * w, 2 * w))  # 1/4
        self.down3 = nn.Sequential(conv_bn(2 * w, 4 * w, stride=2), conv_bn(4 * w, 4 * w, dilation=2))  # 1/8
        self.up2 = conv_bn(6 * w, 2 * w)
        self.up1 = conv_bn(3 * w, w)
        self.up0 = conv_bn(w + w // 2, w // 2)
        self.head = nn.Conv2d(w // 2, 1, 1)
        nn.init.constant_(self.head.bias, SIDE_BIAS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s = self.cfg.input_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (s, s):
            raise ValueError(f"StudentNet expects [B, 3, {s}, {s}], got {tuple(x.shape)}")
        x = x * 2.0 - 1.0
        f0 = self.stem(x)  # [B, w/2, S, S]
        f1 = self.down1(x)  # [B, w, S/2, S/2]
        f2 = self.down2(f1)  # [B, 2w, S/4, S/4]
        f3 = self.down3(f2)  # [B, 4w, S/8, S/8]
        d2 = self.up2(torch.cat([F.interpolate(f3, scale_factor=2.0, mode="bilinear"), f2], 1))  # [B, 2w, S/4, S/4]
        d1 = self.up1(torch.cat([F.interpolate(d2, scale_factor=2.0, mode="bilinear"), f1], 1))  # [B, w, S/2, S/2]
        d0 = self.up0(torch.cat([F.interpolate(d1, scale_factor=2.0, mode="bilinear"), f0], 1))  # [B, w/2, S, S]
        return [self.head(d0)]
