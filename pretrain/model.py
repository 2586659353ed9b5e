"""MultiMAE (Bachmann et al. 2022) in the ViSaRL configuration: RGB (+ saliency) in, one decoder per output.

Input adapters (Conv2d patch projection + fixed 2-D sin-cos positions) turn each modality into
64 tokens (RGB normalised with the ImageNet mean/std first, as MultiMAE's data pipeline does; callers
always pass [0, 1] images); per sample a Dirichlet(1) draw splits exactly `num_visible` tokens across the input
modalities; a ViT encoder (timm blocks) sees those plus one global token; each output decoder
cross-attends from its own 64 queries to the encoded tokens, runs self-attention blocks and
predicts C*P*P values per patch. Losses are computed on masked patches only.

Trained by `python -m pretrain.multimae --data data/shards` (the entry in pretrain/multimae.py; loop in pretrain/train.py).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp, set_fused_attn, use_fused_attn
from timm.models.vision_transformer import Block

from common.cli import option

CHANNELS = {"rgb": 3, "saliency": 1}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: what RL reads from the encoder: the paper's mean of all tokens, the global token, or a grid of
#: per-region means of the patch tokens (all input modalities), flattened (k*k*dim values)
POOLS = {"mean": 1, "global": 1, "grid2": 4, "grid4": 16}
# output name -> (modality it reconstructs, loss, weight)
OUTPUTS = {"rgb": ("rgb", "mse", 1.0), "saliency": ("saliency", "l1", 10.0), "rgb_norm": ("rgb", "mse", 1.0)}


@dataclass
class ModelConfig:
    """Architecture of one MultiMAE; stored (as a dict) in every checkpoint and encoder export.

    Nested in `pretrain.config.PretrainConfig`: its fields are flags of `python -m pretrain.multimae`.
    """

    modalities: tuple[str, ...] = option(
        ("rgb", "saliency"), "'rgb,saliency' (full model) or 'rgb' (the MMAE RGB baseline)"
    )
    image_size: int = option(64, "frame size the model sees (frames are resized by data.preprocess)")
    patch_size: int = option(8, "patch size in pixels")
    dim: int = option(256, "encoder width (the RL feature size)")
    depth: int = option(4, "encoder blocks")
    num_heads: int = option(4, "encoder attention heads")
    mlp_ratio: float = option(4.0, "MLP hidden size / width, encoder and decoders")
    num_visible: int = option(
        0,
        "visible tokens per sample, split across modalities by a Dirichlet draw; 0 = a quarter of all "
        "input tokens (the paper's masking ratio 0.75: 32 of 128 for rgb,saliency, 16 of 64 for rgb)",
    )
    alpha: float = option(1.0, "Dirichlet concentration of the visible-token split")
    decoder_dim: int = option(256, "decoder width")
    decoder_depth: int = option(3, "self-attention blocks per decoder (after its cross-attention)")
    decoder_heads: int = option(4, "decoder attention heads")
    input_norm: str = option(
        "imagenet",
        "RGB input normalisation inside the model: 'imagenet' (MultiMAE's mean/std) or "
        "'none' (raw [0, 1], models made before it)",
        choices=["imagenet", "none"],
    )

    def __post_init__(self) -> None:
        if isinstance(self.modalities, str):  # the flag's form, "rgb,saliency"
            self.modalities = tuple(m.strip() for m in self.modalities.split(",") if m.strip())
        self.modalities = tuple(self.modalities)

    @property
    def visible_tokens(self) -> int:
        """--num-visible, or a quarter of all input tokens when it is 0 (masking ratio 0.75)."""
        return self.num_visible or max(1, len(self.modalities) * self.grid**2 // 4)

    @property
    def outputs(self) -> tuple[str, ...]:
        """rgb, saliency (when an input), and rgb on patch-normalised targets."""
        return tuple(o for o in OUTPUTS if OUTPUTS[o][0] in self.modalities)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        fields.setdefault("input_norm", "none")  # exports from before the ImageNet normalisation saw [0, 1] rgb
        return cls(**fields)

    def validate(self) -> None:
        unknown = [m for m in self.modalities if m not in CHANNELS]
        if not self.modalities or unknown or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(
                f"--modalities must be 'rgb' or 'rgb,saliency' (known: {', '.join(CHANNELS)}), got {','.join(self.modalities)}"
            )
        if "rgb" not in self.modalities:
            raise ValueError("--modalities must include rgb (the RL encoder always sees rgb)")
        if self.image_size % self.patch_size:
            raise ValueError(f"--image-size {self.image_size} is not a multiple of --patch-size {self.patch_size}")
        if self.dim % self.num_heads or self.decoder_dim % self.decoder_heads:
            raise ValueError("--dim/--decoder-dim must be divisible by --num-heads/--decoder-heads")
        if self.input_norm not in ("imagenet", "none"):
            raise ValueError(f"--input-norm must be 'imagenet' or 'none', got {self.input_norm!r}")
        if self.num_visible < 0 or not 0 < self.visible_tokens <= self.grid**2:
            raise ValueError(
                f"--num-visible must be in [1, {self.grid**2}] tokens (0: a quarter of all), got {self.num_visible}"
            )


def sincos_2d(grid: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding [grid*grid, dim] (MAE/MoCo-v3 form)."""
    assert dim % 4 == 0, "sin-cos embedding needs dim divisible by 4"
    y, x = torch.meshgrid(
        torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    out_x, out_y = x.flatten()[:, None] * omega, y.flatten()[:, None] * omega  # [L, dim/4]
    return torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)  # [L, dim]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, L, C*p*p] (channels last inside a patch)."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # [B, h, w, p, p, C]
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(x: torch.Tensor, p: int, channels: int) -> torch.Tensor:
    """[B, L, C*p*p] -> [B, C, H, W]."""
    B, L, _ = x.shape
    g = int(math.isqrt(L))
    x = x.reshape(B, g, g, p, p, channels).permute(0, 5, 1, 3, 2, 4)  # [B, C, h, p, w, p]
    return x.reshape(B, channels, g * p, g * p)


def sample_visible(
    batch: int,
    num_modalities: int,
    tokens_per_modality: int,
    num_visible: int,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dirichlet(alpha) split of exactly `num_visible` tokens across modalities, uniform within each.

    Returns counts long [B, M] (each row sums to num_visible) and visible bool [B, M*N].
    """
    M, N = num_modalities, tokens_per_modality
    if num_visible > N:
        raise ValueError(f"num_visible {num_visible} exceeds the {N} tokens of one modality")
    if alpha == 1.0:  # Dirichlet(1) = normalised Exp(1) draws, reproducible through `generator`
        gamma = -torch.log1p(-torch.rand(batch, M, generator=generator, device=device))
    else:
        gamma = torch.distributions.Gamma(alpha, 1.0).sample((batch, M)).to(device)
    share = gamma / gamma.sum(1, keepdim=True) * num_visible  # [B, M] Dirichlet * K
    counts = share.floor().long()
    # largest-remainder rounding so every row sums to exactly num_visible
    remainder = num_visible - counts.sum(1, keepdim=True)  # [B, 1]
    order = torch.argsort(torch.argsort(share - counts, dim=1, descending=True), dim=1)  # rank of each fraction
    counts = counts + (order < remainder).long()  # [B, M]
    noise = torch.rand(batch, M, N, generator=generator, device=device)
    rank = torch.argsort(torch.argsort(noise, dim=2), dim=2)  # [B, M, N] uniform random order
    visible = rank < counts[:, :, None]  # [B, M, N]
    return counts, visible.reshape(batch, M * N)


@contextlib.contextmanager
def attention_kernels(fused: bool) -> Iterator[None]:
    """Attention layers built inside use timm's fused kernel (SDPA) or matmul-softmax-matmul (timm reads its
    setting when a layer is built); timm's process-wide setting is restored on leaving."""
    previous = use_fused_attn()
    set_fused_attn(fused)
    try:
        yield
    finally:
        set_fused_attn(previous)


class CrossAttention(nn.Module):
    """Queries attend to a context (pre-norm both), then a timm Mlp; residual around each."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.num_heads = num_heads
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.fused_attn = use_fused_attn()  # as timm's Attention: off, attention is matmul-softmax-matmul

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, Lq, D = x.shape
        h = self.num_heads
        q = self.q(self.norm_q(x)).reshape(B, Lq, h, D // h).transpose(1, 2)  # [B, h, Lq, D/h]
        k, v = self.kv(self.norm_kv(context)).reshape(B, -1, 2, h, D // h).permute(2, 0, 3, 1, 4)  # [B, h, Lc, D/h]
        if self.fused_attn:
            attn = F.scaled_dot_product_attention(q, k, v)  # [B, h, Lq, D/h]
        else:
            attn = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v  # [B, h, Lq, D/h]
        attn = attn.transpose(1, 2).reshape(B, Lq, D)  # [B, Lq, D]
        x = x + self.proj(attn)
        return x + self.mlp(self.norm_mlp(x))


class SpatialDecoder(nn.Module):
    """One output: project context, fill mask tokens, add task + position embeddings, x-attn, blocks, head."""

    def __init__(self, cfg: ModelConfig, channels: int, query_modality: int):
        super().__init__()
        D, L = cfg.decoder_dim, cfg.grid**2
        self.query_modality, self.tokens = query_modality, L
        self.proj_context = nn.Linear(cfg.dim, D)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.task_emb = nn.Parameter(torch.zeros(1, len(cfg.modalities), 1, D))  # one per input modality
        self.register_buffer("pos", sincos_2d(cfg.grid, D)[None], persistent=False)  # [1, L, D]
        self.xattn = CrossAttention(D, cfg.decoder_heads, cfg.mlp_ratio)
        self.blocks = nn.Sequential(
            *[Block(D, cfg.decoder_heads, cfg.mlp_ratio, qkv_bias=True) for _ in range(cfg.decoder_depth)]
        )
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, channels * cfg.patch_size**2)

    def forward(self, encoded: torch.Tensor, ids_keep: torch.Tensor, num_modalities: int) -> torch.Tensor:
        """encoded [B, 1+K, E] (global token first), ids_keep [B, K] into M*L tokens -> [B, L, C*p*p]."""
        B, K = ids_keep.shape
        L, D = self.tokens, self.pos.shape[-1]
        x = self.proj_context(encoded)  # [B, 1+K, D]
        # every token's embedding (modality + position), in the M*L layout
        emb = (self.task_emb + self.pos[:, None]).reshape(1, num_modalities * L, D)  # [1, M*L, D]
        idx = ids_keep[..., None].expand(-1, -1, D)  # [B, K, D]
        context = torch.cat([x[:, :1], x[:, 1:] + emb.expand(B, -1, -1).gather(1, idx)], dim=1)  # [B, 1+K, D]
        # queries: this output's modality grid; visible positions carry their encoded token
        full = self.mask_token.expand(B, num_modalities * L, D).scatter(
            1, idx, x[:, 1:].to(self.mask_token.dtype)
        )  # [B, M*L, D]
        m = self.query_modality
        queries = full[:, m * L : (m + 1) * L] + emb[:, m * L : (m + 1) * L]  # [B, L, D]
        y = self.xattn(queries, context)
        y = self.blocks(y)
        return self.head(self.norm(y))  # [B, L, C*p*p]


class MultiMAE(nn.Module):
    """Input adapters + ViT encoder + one spatial decoder per output (none when `decoders=False`)."""

    def __init__(self, cfg: ModelConfig, decoders: bool = True):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        E, p = cfg.dim, cfg.patch_size
        self.patch_embed = nn.ModuleDict({m: nn.Conv2d(CHANNELS[m], E, p, p) for m in cfg.modalities})
        self.register_buffer("pos", sincos_2d(cfg.grid, E)[None], persistent=False)  # [1, L, E] precomputed
        norm = cfg.input_norm == "imagenet"
        self.register_buffer(
            "rgb_mean", torch.tensor(IMAGENET_MEAN if norm else (0.0,) * 3).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "rgb_std", torch.tensor(IMAGENET_STD if norm else (1.0,) * 3).view(1, 3, 1, 1), persistent=False
        )
        self.global_token = nn.Parameter(torch.zeros(1, 1, E))
        self.blocks = nn.Sequential(*[Block(E, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(E)
        self.decoders = nn.ModuleDict(
            {o: SpatialDecoder(cfg, CHANNELS[OUTPUTS[o][0]], cfg.modalities.index(OUTPUTS[o][0])) for o in cfg.outputs}
            if decoders
            else {}
        )
        self.apply(self._init)
        nn.init.normal_(self.global_token, std=0.02)
        for d in self.decoders.values():
            nn.init.normal_(d.mask_token, std=0.02)
            nn.init.normal_(d.task_emb, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
            nn.init.zeros_(m.bias)

    def tokenize(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """{modality: [B, C, H, W] in [0, 1]} (in cfg order) -> tokens [B, M*L, E] with positions.

        RGB is normalised here (ImageNet mean/std unless cfg.input_norm == "none"); saliency stays in [0, 1].
        """
        return torch.cat(
            [
                self.patch_embed[m](self.normalize(m, x)).flatten(2).transpose(1, 2) + self.pos
                for m, x in inputs.items()
            ],
            dim=1,
        )

    def normalize(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return (x - self.rgb_mean) / self.rgb_std if modality == "rgb" else x

    def pool(self, encoded: torch.Tensor, how: str = "mean") -> torch.Tensor:
        """Encoded tokens [B, 1+M*L, E] (global first, all tokens, no masking) -> features [B, k*E].

        mean: all 1+M*L tokens (the paper); global: the global token; gridK: the patch tokens of
        every modality averaged over each cell of a K x K grid of image regions, flattened.
        """
        if how == "mean":
            return encoded.mean(1)
        if how == "global":
            return encoded[:, 0]
        if how not in POOLS:
            raise ValueError(f"unknown pool {how!r}; choose one of {', '.join(POOLS)}")
        k, g = int(how.removeprefix("grid")), self.cfg.grid
        B, E = encoded.shape[0], encoded.shape[-1]
        patches = encoded[:, 1:].reshape(B, -1, g, g, E).mean(1)  # [B, g, g, E] mean over modalities
        cells = F.adaptive_avg_pool2d(patches.permute(0, 3, 1, 2), k)  # [B, E, k, k]
        return cells.permute(0, 2, 3, 1).reshape(B, k * k * E)  # row-major cells, E values each

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T, E] -> [B, 1+T, E] with the global token first."""
        x = torch.cat([self.global_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.norm(self.blocks(x))

    def sample_masks(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Visible tokens of a batch, bool [B, M*L] (Dirichlet split across modalities, as MultiMAE)."""
        cfg = self.cfg
        M, L = len(cfg.modalities), cfg.grid**2
        return sample_visible(batch, M, L, cfg.visible_tokens, cfg.alpha, generator, device)[1]

    def masked_counts(self, visible: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masked patches per output over the batch of `visible` [B, M*L]: what each output's loss is averaged by."""
        L = self.cfg.grid**2
        counts = {}
        for o in self.cfg.outputs:
            m = self.cfg.modalities.index(OUTPUTS[o][0])
            counts[o] = (~visible[:, m * L : (m + 1) * L]).sum().clamp(min=1).float()
        return counts

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        generator: torch.Generator | None = None,
        visible: torch.Tensor | None = None,
        denominators: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """Masked forward pass, with masks drawn here from `generator` or given (`visible` [B, M*L]).

        `denominators` {output: masked patches} average the losses over a larger batch this one is a
        part of (gradient accumulation: see pretrain.train.backward_in_passes); default this batch's own.
        Returns loss, per-output losses, predictions {output: [B, L, C*p*p]} and visible bool [B, M*L].
        """
        cfg = self.cfg
        inputs = {m: inputs[m] for m in cfg.modalities}
        B, M = next(iter(inputs.values())).shape[0], len(cfg.modalities)
        tokens = self.tokenize(inputs)  # [B, M*L, E]
        if visible is None:
            visible = self.sample_masks(B, generator, tokens.device)  # [B, M*L]
        # visible tokens first (stable order within), exactly num_visible of them per row
        ids_keep = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)[:, : cfg.visible_tokens]  # [B, K]
        kept = tokens.gather(1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))  # [B, K, E]
        encoded = self.encode(kept)  # [B, 1+K, E]
        preds = {o: dec(encoded, ids_keep, M) for o, dec in self.decoders.items()}
        losses = self.losses(inputs, preds, visible, denominators)
        loss = sum(OUTPUTS[o][2] * v for o, v in losses.items())
        return loss, losses, preds, visible

    def targets(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-output targets [B, L, C*p*p] of the images the encoder sees (rgb ImageNet-normalised, as in
        MultiMAE); rgb_norm is normalised per patch besides (MAE norm_pix_loss)."""
        out = {}
        for o in self.cfg.outputs:
            m = OUTPUTS[o][0]
            t = patchify(self.normalize(m, inputs[m].float()), self.cfg.patch_size)
            if o == "rgb_norm":
                t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
            out[o] = t
        return out

    def losses(
        self,
        inputs: dict[str, torch.Tensor],
        preds: dict[str, torch.Tensor],
        visible: torch.Tensor,
        denominators: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted loss per output, averaged over masked patches only (those of this batch, or `denominators`)."""
        L = self.cfg.grid**2
        denominators = denominators or self.masked_counts(visible)
        out = {}
        for o, t in self.targets(inputs).items():
            m = self.cfg.modalities.index(OUTPUTS[o][0])
            masked = (~visible[:, m * L : (m + 1) * L]).float()  # [B, L]
            err = preds[o].float() - t
            per_patch = err.abs().mean(-1) if OUTPUTS[o][1] == "l1" else err.pow(2).mean(-1)  # [B, L]
            out[o] = (per_patch * masked).sum() / denominators[o]
        return out

    def to_pixels(self, output: str, pred: torch.Tensor) -> torch.Tensor:
        """Output `output`'s prediction [B, L, C*p*p] in its image's own [0, 1] units (undoes the rgb
        normalisation of `targets`; rgb_norm stays per-patch normalised)."""
        if output != "rgb":
            return pred.float()
        pixels = self.cfg.patch_size**2  # patches are channels-last: the 3 channels repeat per pixel
        return pred.float() * self.rgb_std.flatten().repeat(pixels) + self.rgb_mean.flatten().repeat(pixels)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the input adapters, global token, blocks and norm (what RL needs)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("decoders.")}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
