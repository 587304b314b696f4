"""C: the linear controller of World Models and its CMA-ES training (Ha & Schmidhuber 2018, section 2.3).

    a_t = W_c [z_t, h_t] + b_c        squashed to CarRacing's action box as in the paper's code:
    steer = tanh(.) in [-1, 1],  gas = (tanh(.) + 1) / 2 in [0, 1],  brake = clip(tanh(.), 0, 1)

With z of 32 and h of 256 that is 288 * 3 + 3 = 867 parameters. They are found with CMA-ES
(Hansen 2016) from the ``cma`` package -- never hand-written here -- maximising the mean return over
several rollouts per candidate. :func:`cma_search` evaluates a whole population in one call so the
caller can run all rollouts at once (batched in the dream, parallel processes in the real env).
:func:`real_returns` plays controllers in the real CarRacing-v3 with V and M in the loop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from wmkit.carracing import make_car_racing
from wmkit.worldmodels.data import preprocess_frame


# [eq:controller]
def squash_actions(raw: torch.Tensor) -> torch.Tensor:
    """(..., 3) unbounded -> CarRacing actions (steer, gas, brake) inside the action box."""
    t = torch.tanh(raw)
    return torch.stack([t[..., 0], (t[..., 1] + 1) / 2, t[..., 2].clamp(min=0.0)], dim=-1)


class Controller(nn.Module):
    """a = squash(W [z, h] + b): a single linear layer, 867 parameters in the paper's sizes."""

    def __init__(self, z_dim: int = 32, hidden: int = 256, action_dim: int = 3):
        super().__init__()
        self.linear = nn.Linear(z_dim + hidden, action_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs = [z, h]: (B, Z + H) -> actions (B, 3)."""
        return squash_actions(self.linear(obs))
# [/eq:controller]

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def get_flat(self) -> np.ndarray:
        """All parameters as one float64 vector (what CMA-ES searches over): [W row-major, b]."""
        return torch.cat([self.linear.weight.flatten(), self.linear.bias]).detach().double().numpy()

    def set_flat(self, flat: np.ndarray) -> Controller:
        flat = np.asarray(flat, dtype=np.float64)
        if flat.shape != (self.num_params,):
            raise ValueError(f"Controller.set_flat expects {self.num_params} numbers, got shape {flat.shape}")
        w = self.linear.weight
        with torch.no_grad():
            w.copy_(torch.from_numpy(flat[: w.numel()]).view_as(w))
            self.linear.bias.copy_(torch.from_numpy(flat[w.numel():]))
        return self

    @staticmethod
    def batched_act(params: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Many controllers at once. params: (P, D) flat vectors; obs: (P, N, Z + H) -> (P, N, 3)."""
        P, N, F = obs.shape
        A = params.shape[1] // (F + 1)
        if params.shape != (P, A * (F + 1)):
            raise ValueError(f"batched_act: params {tuple(params.shape)} do not fit obs {tuple(obs.shape)}")
        W = params[:, : A * F].view(P, A, F)                                    # (P, A, F)
        b = params[:, A * F:]                                                   # (P, A)
        return squash_actions(torch.einsum("paf,pnf->pna", W, obs) + b[:, None])  # (P, N, A)


def cma_search(fitness: Callable[[np.ndarray, int], np.ndarray], dim: int, popsize: int,
               generations: int, sigma0: float = 0.1, seed: int = 0, x0: np.ndarray | None = None,
               progress: bool = True, callback: Callable[[int, dict], None] | None = None,
               es=None, weight_decay: float = 0.01) -> tuple[np.ndarray, list[dict], object]:
    """Maximise ``fitness(pop (P, dim), generation) -> (P,)`` with cma.CMAEvolutionStrategy.

    Returns (the distribution mean ``es.result.xfavorite``, per-generation history, the ES object --
    pass it back as ``es`` to continue). The mean is what the paper's code deploys and evaluates
    (estool's ``current_param()``: "mean solution, presumably better with noise"): with noisy fitness the
    best single candidate is mostly the luckiest one. History rows: generation, mean, max, best_so_far
    (raw fitness), and sigma.

    ``weight_decay``: CMA-ES ranks ``f - weight_decay * mean(x^2)`` (estool's ``compute_weight_decay``
    with its default 0.01). estool's CMAES wrapper adds the term with the opposite sign (a bonus on
    large weights, a sign slip); ``weight_decay=-0.01`` reproduces that exactly, 0 switches it off.
    """
    import cma
    from tqdm.auto import tqdm

    if es is None:
        x0 = np.zeros(dim) if x0 is None else np.asarray(x0, np.float64)
        es = cma.CMAEvolutionStrategy(x0, sigma0, {"popsize": popsize, "seed": seed + 1, "verbose": -9})
    history: list[dict] = []
    best_f = -np.inf
    bar = tqdm(range(generations), desc="CMA-ES", disable=not progress)
    for g in bar:
        pop = np.asarray(es.ask())                     # (P, dim)
        f = np.asarray(fitness(pop, g), np.float64)    # (P,) higher is better
        if f.shape != (len(pop),):
            raise ValueError(f"fitness returned shape {f.shape}, expected ({len(pop)},)")
        ranked = f - weight_decay * np.mean(pop ** 2, axis=1)  # (P,) L2 penalty on the weights
        es.tell(list(pop), list(-ranked))              # cma minimises
        best_f = max(best_f, float(f.max()))
        row = {"generation": g, "mean": float(f.mean()), "max": float(f.max()), "best_so_far": best_f,
               "sigma": float(es.sigma)}
        history.append(row)
        bar.set_postfix(mean=f"{row['mean']:.1f}", best=f"{best_f:.1f}")
        if callback is not None:
            callback(g, row)
    return np.asarray(es.result.xfavorite, np.float64).copy(), history, es


@torch.no_grad()
def real_returns(params: np.ndarray, seeds: list[int], vae, mdnrnn, max_steps: int = 1000,
                 workers: int = 1, progress: bool = False) -> np.ndarray:
    """Play controller ``params[i]`` on track ``seeds[i]`` in the real CarRacing-v3 (V and M in the loop).

    Episodes run ``workers`` at a time in a gymnasium vector env (``AsyncVectorEnv``: one process per
    environment); V, M and C run batched in this process. Returns the (N,) episode returns.
    """
    import gymnasium as gym
    from tqdm.auto import tqdm

    params = np.atleast_2d(np.asarray(params, np.float64))
    if len(params) != len(seeds):
        raise ValueError(f"real_returns: {len(params)} parameter vectors but {len(seeds)} seeds")
    returns = np.zeros(len(seeds))
    vae.eval()
    mdnrnn.eval()
    dev = next(vae.parameters()).device
    bar = tqdm(total=len(seeds), desc="real episodes", disable=not progress)
    for start in range(0, len(seeds), workers):
        idx = list(range(start, min(start + workers, len(seeds))))
        n = len(idx)
        make = [lambda: make_car_racing(max_episode_steps=max_steps)] * n
        envs = gym.vector.AsyncVectorEnv(make) if n > 1 else gym.vector.SyncVectorEnv(make)
        obs, _ = envs.reset(seed=[int(seeds[i]) for i in idx])
        p = torch.as_tensor(params[idx], dtype=torch.float32, device=dev)       # (n, D)
        state = mdnrnn.initial_state(n, dev)
        h = state[0][0]                                                         # (n, H)
        alive = np.ones(n, bool)
        for _ in range(max_steps):
            frames = np.stack([preprocess_frame(o) for o in obs])               # (n, 64, 64, 3)
            x = torch.from_numpy(frames).to(dev).permute(0, 3, 1, 2).float() / 255
            z, _ = vae.encode(x)                                                # (n, Z)
            a = Controller.batched_act(p, torch.cat([z, h], -1)[:, None])[:, 0]  # (n, 3)
            out = mdnrnn(z[:, None], a[:, None], state)
            state, h = out.state, out.h[:, -1]
            obs, r, term, trunc, _ = envs.step(a.cpu().numpy())
            returns[idx] += np.where(alive, r, 0.0)
            alive &= ~(term | trunc)
            if not alive.any():
                break
        envs.close()
        bar.update(n)
    bar.close()
    return returns
