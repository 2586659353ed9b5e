"""Soft actor-critic (Haarnoja et al. 2018) as in the paper's code, with the twin critics fused.

The two Q-networks are one ensemble whose layers are batched matrix products (`EnsembleLinear`:
weights [2, in, out], one `baddbmm` per layer), so both critics cost one kernel per layer. The
encoder is trained through the critic loss only; the actor reads its detached features (DrQ-v2);
target values use the online encoder's features of the next observation without gradients.
Frozen encoders' features come precomputed from the replay buffer (field "embedding").
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rl.encoders import Encoder


class EnsembleLinear(nn.Module):
    """`n` independent Linear layers applied as one batched matmul: [n, B, in] -> [n, B, out]."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n, 1, out_dim))
        with torch.no_grad():  # orthogonal init per member, as the paper's code (SAC-AE's weight_init)
            for i in range(n):
                self.weight[i] = nn.init.orthogonal_(torch.empty(out_dim, in_dim)).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n or 1, B, in] -> [n, B, out]
        if x.shape[0] != self.weight.shape[0]:
            x = x.expand(self.weight.shape[0], -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)


class Critic(nn.Module):
    """Twin Q-functions Q(feature, action) -> [2, B]."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dim: int, num_q: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            EnsembleLinear(num_q, feature_dim + action_dim, hidden_dim), nn.ReLU(inplace=True),
            EnsembleLinear(num_q, hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            EnsembleLinear(num_q, hidden_dim, 1),
        )

    def forward(self, feature: torch.Tensor, action: torch.Tensor) -> torch.Tensor:  # [B, F], [B, A] -> [2, B]
        return self.net(torch.cat([feature, action], dim=-1)[None]).squeeze(-1)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy; log-std squashed into [log_std_min, log_std_max]."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dim: int, log_std_min: float, log_std_max: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, 2 * action_dim),
        )
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight)
                nn.init.zeros_(m.bias)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, feature: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Action [B, A] in [-1, 1] and its log-probability [B] (the mean action when deterministic)."""
        mu, log_std = self.net(feature).chunk(2, dim=-1)  # [B, A] each
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        if deterministic:
            return torch.tanh(mu), torch.zeros(mu.shape[0], device=mu.device)
        noise = torch.randn_like(mu)
        u = mu + noise * log_std.exp()
        # log N(u; mu, std) - sum log(1 - tanh(u)^2), the latter as 2 (log 2 - u - softplus(-2u))
        log_prob = (-0.5 * noise.pow(2) - log_std).sum(-1) - 0.5 * math.log(2 * math.pi) * mu.shape[-1]
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob


class SAC(nn.Module):
    """Actor, twin critics with targets, temperature; `update(batch)` is one SAC gradient step."""

    def __init__(self, encoder: Encoder, action_dim: int, cfg: Any):
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        feat = encoder.out_dim
        self.actor = Actor(feat, action_dim, cfg.hidden_dim, cfg.log_std_min, cfg.log_std_max)
        self.critic = Critic(feat, action_dim, cfg.hidden_dim)
        self.critic_target = Critic(feat, action_dim, cfg.hidden_dim).requires_grad_(False)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_temperature)))
        self.target_entropy = float(cfg.target_entropy if cfg.target_entropy is not None else -action_dim)
        encoder_params = [] if encoder.frozen else [p for p in encoder.parameters() if p.requires_grad]
        self.critic_opt = torch.optim.Adam([*self.critic.parameters(), *encoder_params], lr=cfg.critic_lr, fused=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr, fused=True)
        self.num_updates = 0
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:  # [B, F]
        if self.encoder.frozen:
            return obs["embedding"].float()
        return self.encoder(obs)

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], deterministic: bool = False) -> torch.Tensor:  # [B, A]
        return self.actor(self.features(obs), deterministic)[0]

    def update(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One critic step; actor, temperature and target steps every `*_update_every` calls.

        Returns detached scalar tensors (converted to numbers only when logged).
        """
        cfg = self.cfg
        self.num_updates += 1
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_feat = self.features(batch["next_obs"])
            next_action, next_logp = self.actor(next_feat)
            target_q = self.critic_target(next_feat, next_action).min(0).values - alpha * next_logp  # [B]
            target = batch["reward"] + cfg.discount * (1.0 - batch["terminal"]) * target_q  # [B]
        feat = self.features(batch["obs"])
        q = self.critic(feat, batch["action"])  # [2, B]
        critic_loss = (q - target).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean()}

        if self.num_updates % cfg.actor_update_every == 0:
            feat = feat.detach()
            self.critic.requires_grad_(False)
            action, logp = self.actor(feat)
            actor_loss = (alpha * logp - self.critic(feat, action).min(0).values).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            self.critic.requires_grad_(True)
            alpha_loss = (self.log_alpha.exp() * (-logp.detach() - self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
            metrics.update(actor_loss=actor_loss.detach(), alpha_loss=alpha_loss.detach(), entropy=-logp.detach().mean())
        if self.num_updates % cfg.target_update_every == 0:
            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._critic_params, cfg.tau)
        return metrics

    def training_state(self) -> dict[str, Any]:
        """Networks, optimisers and counters (tensors and numbers only: weights_only-loadable)."""
        return {
            "model": self.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["model"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.num_updates = int(state["num_updates"])
