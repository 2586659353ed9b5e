"""PiCANet (Liu, Han and Yang, CVPR 2018): a VGG16 U-Net whose decoder cells attend to pixel-wise context.

Layouts (one letter per decoder cell that carries an attention module, coarse to fine; a final
plain conv cell "C" is always appended at full resolution):

* "LLL"   (ViSaRL's trimmed model, the default): local cells on conv4_3, conv3_3, conv2_2, then the
  conv1_2 cell. Only VGG up to conv4_3 is built: the reference trimmed model still computed
  conv5 + fc6/fc7 that nothing read (35.6M parameters instead of 7.9M).
* "GGLLL" (the paper's full model): global cells on fc7 and conv5_3 (pool4 with stride 1, dilated
  conv5, fc6/fc7 as dilated convolutions, so both sit at 1/8 of the input), then the local cells.

Local module: a 7x7 dilated conv predicts 49 softmax weights per pixel over its 7x7 neighbourhood at
dilation 2 (gathered with `unfold`). Global module: a bi-directional LSTM ReNet (vertical then
horizontal sweeps) predicts softmax weights over a 10x10 grid spanning the whole map.
Every cell emits a sigmoid side output; training deep-supervises them all with BCE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import vgg

from common.cli import option
from common.io import safe_torch_load

VGG16_CFG = vgg.cfgs["D"]  # [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M']
LAYOUTS = ("LLL", "GGLLL")
SIDE_BIAS = -4.6  # logit(0.01): saliency maps are mostly zero, so outputs start near 0.01, not 0.5


@dataclass
class PiCANetConfig:
    """Architecture of one PiCANet; stored as a plain dict inside every checkpoint."""

    layout: str = option(
        "LLL", "decoder attention layout: LLL (trimmed, ViSaRL) or GGLLL (full)", choices=["LLL", "GGLLL"]
    )
    input_size: int = option(224, "frames are resized to this square size by data.preprocess (paper: 224)")
    width: float = option(1.0, "VGG16 channel multiplier (1.0 = torchvision VGG16)")
    batch_norm: bool = option(
        True, "VGG16 with BatchNorm (vgg16_bn layout; from-scratch training); --no-batch-norm for plain vgg16 weights"
    )
    local_hidden: int = option(128, "hidden channels of the local attention's 7x7 conv (x width)")
    global_hidden: int = option(256, "LSTM hidden size of the global ReNet, per direction (x width)")

    def validate(self) -> "PiCANetConfig":
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.input_size < 32 or self.input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8 and >= 32, got {self.input_size}")
        if not 0 < self.width <= 1.0:
            raise ValueError(f"width must lie in (0, 1], got {self.width}")
        return self


class LocalAttention(nn.Module):
    """Each pixel attends over its 7x7 neighbourhood at dilation 2 with softmax weights it predicts."""

    def __init__(self, channels: int, hidden: int = 128, kernel: int = 7, dilation: int = 2):
        super().__init__()
        self.kernel, self.dilation = kernel, dilation
        pad = dilation * (kernel - 1) // 2
        self.attend = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel, padding=pad, dilation=dilation),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, kernel * kernel, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k2 = self.kernel * self.kernel
        weights = self.attend(x).softmax(dim=1).view(b, 1, k2, h * w)  # [B, 1, 49, HW]
        pad = self.dilation * (self.kernel - 1) // 2
        patches = F.unfold(x, self.kernel, dilation=self.dilation, padding=pad).view(b, c, k2, h * w)  # [B, C, 49, HW]
        return (patches * weights).sum(dim=2).view(b, c, h, w)


class ReNet(nn.Module):
    """Bi-directional LSTM sweeps: down the columns, then along the rows; 1x1 conv to `out` channels."""

    def __init__(self, channels: int, out: int, hidden: int = 256):
        super().__init__()
        self.vertical = nn.LSTM(channels, hidden, batch_first=True, bidirectional=True)
        self.horizontal = nn.LSTM(2 * hidden, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Conv2d(2 * hidden, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        cols = x.permute(0, 3, 2, 1).reshape(b * w, h, c)  # [B*W, H, C]: one sequence per column
        v, _ = self.vertical(cols)  # [B*W, H, 2h]
        rows = v.view(b, w, h, -1).permute(0, 2, 1, 3).reshape(b * h, w, -1)  # [B*H, W, 2h]
        hz, _ = self.horizontal(rows)  # [B*H, W, 2h]
        return self.proj(hz.view(b, h, w, -1).permute(0, 3, 1, 2))  # [B, out, H, W]


class GlobalAttention(nn.Module):
    """Each pixel attends over a 10x10 grid spanning the whole map (PiCANet: 28x28 at dilation 3)."""

    def __init__(self, channels: int, hidden: int = 256, grid: int = 10):
        super().__init__()
        self.grid = grid
        self.renet = ReNet(channels, grid * grid, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.grid, h, w)
        weights = self.renet(x)[:, : g * g].softmax(dim=1).view(b, g * g, h * w)  # [B, g*g, HW]
        rows = torch.linspace(0, h - 1, g, device=x.device).round().long()
        cols = torch.linspace(0, w - 1, g, device=x.device).round().long()
        grid = x[:, :, rows][:, :, :, cols].reshape(b, c, g * g)  # [B, C, g*g]
        return torch.bmm(grid, weights).view(b, c, h, w)


class DecoderCell(nn.Module):
    """BN+ReLU on the skip feature, concat with the 2x-upsampled decoder feature, 1x1 conv, attention,
    concat, 1x1 conv + BN + ReLU, and a 1x1 side output (logits). Mode "C": no attention, the 1x1
    conv gives the logits directly."""

    def __init__(self, channels: int, out_channels: int, mode: str, cfg: PiCANetConfig):
        super().__init__()
        self.mode = mode
        self.bn_skip = nn.BatchNorm2d(channels)
        self.fuse = nn.Conv2d(2 * channels, channels, 1)
        if mode == "C":
            self.side = nn.Conv2d(channels, 1, 1)
            return
        self.attention = (
            LocalAttention(channels, max(16, round(cfg.local_hidden * cfg.width)))
            if mode == "L"
            else GlobalAttention(channels, max(16, round(cfg.global_hidden * cfg.width)))
        )
        self.out = nn.Sequential(
            nn.Conv2d(2 * channels, out_channels, 1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
        )
        self.side = nn.Conv2d(out_channels, 1, 1)

    def forward(self, skip: torch.Tensor, dec: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        skip = F.relu(self.bn_skip(skip))
        if dec is None:
            dec = skip
        elif dec.shape[-1] != skip.shape[-1]:
            dec = F.interpolate(dec, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        fmap = F.relu(self.fuse(torch.cat([skip, dec], 1)))  # [B, C, H, W]
        if self.mode == "C":
            return None, self.side(fmap)
        feat = self.out(torch.cat([fmap, self.attention(fmap)], 1))  # [B, C_out, H, W]
        return feat, self.side(feat)


def _vgg_features(cfg: PiCANetConfig, n_blocks: int) -> nn.Sequential:
    """torchvision's VGG16 `features` (channels scaled by `width`), cut after conv block `n_blocks`."""
    layers = [v if v == "M" else max(8, round(v * cfg.width)) for v in VGG16_CFG]
    pools = [i for i, v in enumerate(layers) if v == "M"]
    keep = layers[: pools[n_blocks - 1]] if n_blocks <= 4 else layers
    return vgg.make_layers(keep, batch_norm=cfg.batch_norm)


class PiCANet(nn.Module):
    """`forward(x [B, 3, S, S] in [0, 1])` -> list of side-output logits, coarse to fine; the last is [B, 1, S, S]."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, cfg: PiCANetConfig):
        super().__init__()
        self.cfg = cfg.validate()
        full = cfg.layout == "GGLLL"
        self.features = _vgg_features(cfg, 5 if full else 4)
        chans = [m.out_channels for m in self.features if isinstance(m, nn.Conv2d)]
        # Taps: the activation right before each 2x2 pool (conv1_2, conv2_2, conv3_3, conv4_3[, conv5_3]).
        pool_idx = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        self._taps = {i - 1 for i in pool_idx} | (set() if full else {len(self.features) - 1})
        tap_ch = [chans[1], chans[3], chans[6], chans[9]]
        if full:
            # PiCANet's dilated tail: pool4 keeps the resolution, conv5 dilated by 2, pool5 stride 1,
            # fc6 / fc7 as 3x3 convolutions (fc6 dilated, 12 at 224 px), all at 1/8 of the input.
            self.features[pool_idx[3]] = nn.MaxPool2d(3, 1, 1)
            for m in self.features[pool_idx[3] :]:
                if isinstance(m, nn.Conv2d):
                    m.dilation, m.padding = (2, 2), (2, 2)
            self.features[pool_idx[4]] = nn.MaxPool2d(3, 1, 1)
            fc = max(16, round(1024 * cfg.width))
            dil = max(1, 12 * cfg.input_size // 224)
            self.fc = nn.Sequential(
                nn.Conv2d(chans[12], fc, 3, padding=dil, dilation=dil),
                nn.ReLU(inplace=True),
                nn.Conv2d(fc, fc, 3, padding=1),
                nn.ReLU(inplace=True),
            )
            tap_ch = tap_ch + [chans[12], fc]
        else:
            self.fc = None
        enc_ch = tap_ch[::-1]  # coarse to fine: [fc7, conv5_3,] conv4_3, conv3_3, conv2_2, conv1_2
        modes = cfg.layout + "C"
        self.cells = nn.ModuleList(
            DecoderCell(enc_ch[i], enc_ch[i + 1] if i + 1 < len(enc_ch) else 1, modes[i], cfg)
            for i in range(len(modes))
        )
        for cell in self.cells:  # start every side output at the prior of a sparse map (focal-loss init)
            nn.init.constant_(cell.side.bias, SIDE_BIAS)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    @property
    def side_sizes(self) -> list[int]:
        s = self.cfg.input_size
        return [s // 8] * (len(self.cfg.layout) - 2) + [s // 4, s // 2, s]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                taps.append(x)
        if self.fc is not None:
            taps.append(self.fc(x))  # [B, fc, S/8, S/8]
        return taps[::-1]  # coarse to fine

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != self.cfg.input_size or x.shape[-2] != self.cfg.input_size:
            raise ValueError(
                f"PiCANet expects [B, 3, {self.cfg.input_size}, {self.cfg.input_size}], got {tuple(x.shape)}"
            )
        taps = self.encode((x - self.mean) / self.std)
        dec, sides = None, []
        for cell, skip in zip(self.cells, taps):
            dec, logit = cell(skip, dec)
            sides.append(logit)
        return sides

    def load_backbone(self, path: str) -> None:
        """Copy VGG16 weights from a torchvision checkpoint (`vgg16` or `vgg16_bn` state dict, or its
        `features.*` subset) into the encoder; only the layers this layout reads are loaded."""
        state = safe_torch_load(path, what="backbone weights")
        if not isinstance(state, dict):
            raise ValueError(f"{path} is not a state dict (a torchvision vgg16(_bn) state dict is needed)")
        state = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.") or k[0].isdigit()
        }
        own = self.features.state_dict()
        missing = [k for k in own if k not in state]
        wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or wrong:
            raise ValueError(
                f"{path} does not match this encoder (missing {missing[:3]}, shape mismatch {wrong[:3]}): "
                f"it needs a torchvision {'vgg16_bn' if self.cfg.batch_norm else 'vgg16'} state dict and width=1.0; "
                f"pass --{'no-' if self.cfg.batch_norm else ''}batch-norm to match the file"
            )
        self.features.load_state_dict({k: state[k] for k in own})
