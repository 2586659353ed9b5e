"""Soft actor-critic (Haarnoja et al. 2018) as in the paper's code, for a pack of R independent runs.

Every network is packed (rl/nets.py): the R runs' actors are one batched MLP, their twin critics
one ensemble of 2R members, their temperatures one [R] vector; the loss of the pack is the sum of
the runs' losses, so each run's gradient is its own, and one Adam step over the stacked tensors is
R independent Adam steps. The encoder is trained through the critic loss only; the actor reads
its detached features (DrQ-v2); target values use the online encoder's features of the next
observation without gradients. Frozen encoders' features come precomputed from the replay buffer
(field "embedding"); then the agent holds no encoder.

Randomness that shapes a run's data (exploration noise, the policy's reparameterisation noise)
comes from that run's own generator (`RunNoise`), never from a generator the pack shares.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.precision import autocast
from rl.encoders import Encoder
from rl.nets import PackedMLP, slice_state, stack_states


class Critic(nn.Module):
    """Twin Q-functions of R runs: Q(feature [R, B, F], action [R, B, A]) -> [R, 2, B]."""

    def __init__(self, runs: int, feature_dim: int, action_dim: int, hidden_dim: int, num_q: int = 2):
        super().__init__()
        self.runs, self.num_q = runs, num_q
        self.net = PackedMLP(runs * num_q, [feature_dim + action_dim, hidden_dim, hidden_dim, 1])

    def forward(self, feature: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([feature, action], dim=-1)  # [R, B, F + A]
        r, b = x.shape[:2]
        x = x[:, None].expand(r, self.num_q, b, x.shape[-1]).reshape(r * self.num_q, b, x.shape[-1])  # [R*2, B, F+A]
        return self.net(x).view(r, self.num_q, b)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policies of R runs; log-std squashed into [log_std_min, log_std_max]."""

    def __init__(
        self, runs: int, feature_dim: int, action_dim: int, hidden_dim: int, log_std_min: float, log_std_max: float
    ):
        super().__init__()
        self.net = PackedMLP(runs, [feature_dim, hidden_dim, hidden_dim, 2 * action_dim])
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, feature: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Action [R, B, A] in [-1, 1] and its log-probability [R, B]; the mean action when `noise` is None."""
        mu, log_std = self.net(feature).chunk(2, dim=-1)  # [R, B, A] each
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        if noise is None:
            return torch.tanh(mu), torch.zeros(mu.shape[:-1], device=mu.device)
        u = mu + noise * log_std.exp()
        # log N(u; mu, std) - sum log(1 - tanh(u)^2), the latter as 2 (log 2 - u - softplus(-2u))
        log_prob = (-0.5 * noise.pow(2) - log_std).sum(-1) - 0.5 * math.log(2 * math.pi) * mu.shape[-1]
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob


class RunNoise:
    """One CPU generator per run: standard normal noise [R, *shape], run r's rows from run r's stream."""

    def __init__(self, seeds: list[int]):
        self.generators = [torch.Generator().manual_seed(int(s) * 1_000_003 + 3) for s in seeds]

    def normal(self, *shape: int, device: torch.device | str = "cpu") -> torch.Tensor:
        noise = torch.stack([torch.randn(shape, generator=g) for g in self.generators])  # [R, *shape]
        return noise.to(device, non_blocking=True)

    def state(self, run: int) -> torch.Tensor:
        return self.generators[run].get_state()

    def load(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self.generators, states):
            g.set_state(s)


class SAC(nn.Module):
    """Actors, twin critics with targets and temperatures of R runs; `update(batch, noise)` is one
    SAC gradient step of every run."""

    def __init__(
        self,
        encoder: Encoder | None,
        feature_dim: int,
        action_dim: int,
        cfg: Any,
        runs: int = 1,
        precision: str = "fp32",
    ):
        super().__init__()
        self.encoder, self.cfg, self.runs, self.action_dim = encoder, cfg, runs, action_dim
        self.precision = precision  # resolved ('bf16' or 'fp32', common/precision.py)
        self.actor = Actor(runs, feature_dim, action_dim, cfg.hidden_dim, cfg.log_std_min, cfg.log_std_max)
        self.critic = Critic(runs, feature_dim, action_dim, cfg.hidden_dim)
        self.critic_target = Critic(runs, feature_dim, action_dim, cfg.hidden_dim).requires_grad_(False)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.log_alpha = nn.Parameter(torch.full((runs,), math.log(cfg.init_temperature)))
        self.target_entropy = float(cfg.target_entropy if cfg.target_entropy is not None else -action_dim)
        encoder_params = [p for p in encoder.parameters() if p.requires_grad] if encoder is not None else []
        self.critic_opt = torch.optim.Adam([*self.critic.parameters(), *encoder_params], lr=cfg.critic_lr, fused=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr, fused=True)
        self.num_updates = 0
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:  # [R, B, F]
        if self.encoder is None:
            return obs["embedding"].float()
        return self.encoder(obs)

    def autocast(self) -> torch.autocast:
        """The region of the pack's precision: bf16 matmuls and convolutions, float32 output layers."""
        return autocast(self.precision, self.log_alpha.device)

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], noise: torch.Tensor | None = None) -> torch.Tensor:  # [R, N, A]
        """Sampled actions with `noise` [R, N, A] (each run's own), the mean action without."""
        with self.autocast():
            return self.actor(self.features(obs), noise)[0]

    def update(self, batch: dict[str, Any], noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """One critic step of every run; actor, temperature and target steps every `*_update_every` calls.

        noise [2, R, B, A]: the reparameterisation noise of the target and the actor step.
        Returns detached per-run metrics [R] (converted to numbers only when logged).
        """
        self.num_updates += 1
        with self.autocast():
            return self.step(batch, noise, *self.schedule(self.num_updates))

    def schedule(self, update: int) -> tuple[bool, bool]:
        """(actor and temperature step?, target step?) of the update numbered `update` (from 1)."""
        return update % self.cfg.actor_update_every == 0, update % self.cfg.target_update_every == 0

    def step(
        self, batch: dict[str, Any], noise: torch.Tensor, actor_step: bool, target_step: bool
    ) -> dict[str, torch.Tensor]:
        """The tensor work of one update: no host synchronisation, so a GPU can capture it as a graph."""
        cfg = self.cfg
        alpha = self.log_alpha.detach().exp()[:, None]  # [R, 1]
        with torch.no_grad():
            next_feat = self.features(batch["next_obs"])
            next_action, next_logp = self.actor(next_feat, noise[0])
            target_q = self.critic_target(next_feat, next_action).min(1).values - alpha * next_logp  # [R, B]
            target = batch["reward"] + cfg.discount * (1.0 - batch["terminal"]) * target_q  # [R, B]
        feat = self.features(batch["obs"])
        q = self.critic(feat, batch["action"])  # [R, 2, B]
        critic_loss = (q - target[:, None]).pow(2).mean(2).sum(1)  # [R]
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_opt.step()
        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean((1, 2))}

        if actor_step:
            feat = feat.detach()
            self.critic.requires_grad_(False)
            action, logp = self.actor(feat, noise[1])
            actor_loss = (alpha * logp - self.critic(feat, action).min(1).values).mean(1)  # [R]
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.sum().backward()
            self.actor_opt.step()
            self.critic.requires_grad_(True)
            alpha_loss = (self.log_alpha.exp()[:, None] * (-logp.detach() - self.target_entropy)).mean(1)  # [R]
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.sum().backward()
            self.alpha_opt.step()
            metrics.update(
                actor_loss=actor_loss.detach(), alpha_loss=alpha_loss.detach(), entropy=-logp.detach().mean(1)
            )
        if target_step:
            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._critic_params, cfg.tau)
        return metrics

    # -- per-run state ----------------------------------------------------------------------------
    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic_opt": self.critic_opt, "actor_opt": self.actor_opt, "alpha_opt": self.alpha_opt}

    def run_state(self, run: int) -> dict[str, Any]:
        """Run `run`'s networks, optimisers and counter, as a pack of one (weights_only-loadable)."""
        return {
            "model": slice_state(self.state_dict(), run, self.runs),
            **{k: slice_state(opt.state_dict(), run, self.runs) for k, opt in self._optimizers().items()},
            "num_updates": self.num_updates,
        }

    def load_run_states(self, states: list[dict[str, Any]]) -> None:
        """Stack the runs' states (packs of one, e.g. from their checkpoints) into this pack."""
        if len(states) != self.runs or len({int(s["num_updates"]) for s in states}) != 1:
            raise ValueError("a pack resumes runs with the same number of updates, one state per run")
        self.load_state_dict(stack_states([s["model"] for s in states]))
        for k, opt in self._optimizers().items():
            opt.load_state_dict(stack_states([s[k] for s in states]))
        self.num_updates = int(states[0]["num_updates"])


class GraphedUpdates:
    """`SAC.update` replayed from CUDA graphs: each schedule variant (actor step or not, target step
    or not) is captured once, after a few eager warm-up updates on a side stream (which create the
    optimisers' state), and every later update copies its batch and noise into the graph's static
    inputs and replays it: a whole update of every run of the pack is one graph launch.

    Updates are the same computation as eager ones (`SAC.step`); if a capture fails, updates stay
    eager and the reason is kept in `disabled`.
    """

    WARMUP = 4

    def __init__(self, agent: SAC):
        self.agent = agent
        self.graphs: dict[tuple[bool, bool], tuple[torch.cuda.CUDAGraph, dict[str, torch.Tensor]]] = {}
        self.static: tuple[dict[str, Any], torch.Tensor] | None = None
        self.disabled = ""
        for opt in agent._optimizers().values():
            for group in opt.param_groups:
                group["capturable"] = True  # optimiser steps without host synchronisation

    def __call__(self, batch: dict[str, Any], noise: torch.Tensor) -> dict[str, torch.Tensor]:
        agent = self.agent
        if self.disabled:
            return agent.update(batch, noise)
        if agent.num_updates < self.WARMUP:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = agent.update(batch, noise)
            torch.cuda.current_stream().wait_stream(side)
            return out
        key = agent.schedule(agent.num_updates + 1)
        if self.static is None:
            self.static = _clone_tree((batch, noise))
        _copy_tree(self.static, (batch, noise))
        if key not in self.graphs:
            try:
                graph = torch.cuda.CUDAGraph()
                for opt in agent._optimizers().values():
                    opt.zero_grad(set_to_none=True)
                with torch.cuda.graph(graph), agent.autocast():
                    outputs = agent.step(*self.static, *key)
                self.graphs[key] = (graph, outputs)
            except RuntimeError as err:  # e.g. an encoder with host synchronisation in its forward
                agent.critic.requires_grad_(True)
                self.disabled = f"CUDA graph capture failed, updates stay eager: {err}"
                print(f"warning: {self.disabled}", flush=True)
                return agent.update(batch, noise)
        graph, outputs = self.graphs[key]
        graph.replay()
        agent.num_updates += 1
        return outputs


def _clone_tree(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {k: _clone_tree(v) for k, v in tree.items()}
    return tuple(_clone_tree(v) for v in tree)


def _copy_tree(dst: Any, src: Any) -> None:
    if isinstance(dst, torch.Tensor):
        dst.copy_(src, non_blocking=True)
    elif isinstance(dst, dict):
        for k in dst:
            _copy_tree(dst[k], src[k])
    else:
        for d, s_ in zip(dst, src):
            _copy_tree(d, s_)
