"""An independent single-run SAC (CleanRL-sized, plain nn.Linear modules) to hold the packed agent against.

It shares nothing with rl/agent.py or rl/nets.py but the math of the paper's SAC: twin critics with
targets, a tanh-squashed Gaussian actor whose log-std is squashed into [min, max], a learned temperature,
actor and target updates every `update_every` critic updates. Its log-probability comes from
torch.distributions, not from the closed form the packed actor uses.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, TanhTransform, TransformedDistribution


def mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ReferenceSAC:
    """One run's SAC on precomputed features [B, F]."""

    def __init__(self, feature_dim: int, action_dim: int, cfg):
        self.cfg = cfg
        hidden = cfg.hidden_dim
        self.q1, self.q2 = (
            mlp([feature_dim + action_dim, hidden, hidden, 1]),
            mlp([feature_dim + action_dim, hidden, hidden, 1]),
        )
        self.actor = mlp([feature_dim, hidden, hidden, 2 * action_dim])
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.target_entropy = -float(action_dim)
        self.q_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=cfg.critic_lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.updates = 0

    def sync_targets(self) -> None:
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)

    def policy(self, feature: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability (torch.distributions) for standard-normal `noise`."""
        mu, log_std = self.actor(feature).chunk(2, -1)
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        std = (lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1)).exp()
        dist = TransformedDistribution(Normal(mu, std), [TanhTransform(cache_size=1)])
        action = torch.tanh(mu + std * noise)
        return action, dist.log_prob(action).sum(-1)

    @staticmethod
    def q(net: nn.Module, feature: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([feature, action], -1)).squeeze(-1)

    def update(self, batch: dict, noise: torch.Tensor) -> dict[str, float]:
        """batch: obs/next_obs features [B, F], action [B, A], reward and terminal [B]; noise [2, B, A]."""
        cfg = self.cfg
        self.updates += 1
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_action, next_logp = self.policy(batch["next_obs"], noise[0])
            next_q = (
                torch.min(
                    self.q(self.q1_target, batch["next_obs"], next_action),
                    self.q(self.q2_target, batch["next_obs"], next_action),
                )
                - alpha * next_logp
            )
            target = batch["reward"] + cfg.discount * (1 - batch["terminal"]) * next_q
        q1, q2 = self.q(self.q1, batch["obs"], batch["action"]), self.q(self.q2, batch["obs"], batch["action"])
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.q_opt.zero_grad()
        critic_loss.backward()
        self.q_opt.step()
        out = {"critic_loss": critic_loss.item(), "q_mean": 0.5 * (q1.mean() + q2.mean()).item()}
        if self.updates % cfg.actor_update_every == 0:
            action, logp = self.policy(batch["obs"], noise[1])
            q_pi = torch.min(self.q(self.q1, batch["obs"], action), self.q(self.q2, batch["obs"], action))
            actor_loss = (alpha * logp - q_pi).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            alpha_loss = (self.log_alpha.exp() * (-logp.detach() - self.target_entropy)).mean()
            self.alpha_opt.zero_grad()
            alpha_loss.backward()
            self.alpha_opt.step()
            out.update(actor_loss=actor_loss.item(), alpha_loss=alpha_loss.item(), entropy=-logp.mean().item())
        if self.updates % cfg.target_update_every == 0:
            with torch.no_grad():
                for online, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                    for p, t in zip(online.parameters(), target.parameters()):
                        t.lerp_(p, cfg.tau)
        return out
