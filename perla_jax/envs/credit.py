"""One-step credit-assignment games where the other agents' actions are the noise (``--env credit``,
``--env credit_pairs``).

``credit`` (additive): each of N agents sees its own context, a one-hot of ``num_contexts``, drawn uniformly at
every reset; the team reward, paid to every agent, is the mean over agents of x_j = "agent j chose its context's
target action" (the target of context c is c mod ``num_actions``), plus optional Gaussian noise of scale
``reward_noise``. Optimum 1.0; a uniformly random team scores 1/|A|; each agent's share of the reward is 1/N
while the variance the others' actions add grows with N: the credit-assignment problem PERLA's theory is about.

``credit_pairs`` (not additive): N even agents play in the fixed pairs (2m, 2m+1). Each pair draws one context
c_m per episode and both partners observe it (the same one-hot); the pair scores only when both partners choose
its target, so the team reward is the mean over pairs of x_2m x_2m+1 (plus the same noise). Optimum 1.0; a
uniformly random team scores 1/|A|^2. No critic built from per-agent additive terms can represent it: agent i's
action is worth something only when its partner's is right.

Every episode is one step and ends in a termination. The critic's global state is the concatenated
observations (the base ``MultiAgentEnv``). ``exact_q`` of either game is its true centralised critic, and
``credit_others_share`` / ``pairs_others_share`` the trainer's others_share metric under that critic.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
from jaxmarl.environments import spaces

from perla_jax.envs.base import EnvFamily, MultiAgentEnv


@chex.dataclass(frozen=True)
class CreditState:
    context: chex.Array  # [N] int, the context each agent observes (partners share one in credit_pairs)
    step: chex.Array  # []


def hits(context: chex.Array, actions: chex.Array, num_actions: int) -> chex.Array:
    """x_j = "agent j chose its context's target action": ``[N]`` int, ``[N]`` int -> ``[N]`` float 0/1."""
    return (actions == context % num_actions).astype(jnp.float32)


def credit_q(context: chex.Array, actions: chex.Array, num_actions: int) -> chex.Array:
    """The additive game's exact critic Q(s, a) = mean_j x_j: ``[N]``, ``[N]`` -> ``[]``."""
    return jnp.mean(hits(context, actions, num_actions))


def pairs_q(context: chex.Array, actions: chex.Array, num_actions: int) -> chex.Array:
    """The pairs game's exact critic Q(s, a) = mean_m x_2m x_2m+1: ``[N]``, ``[N]`` -> ``[]`` (N even)."""
    x = hits(context, actions, num_actions)
    return jnp.mean(x[0::2] * x[1::2])


class CreditGame:
    """The additive game in jaxmarl's environment interface (``reset``, ``step_env``, per-agent spaces)."""

    def __init__(self, num_agents: int = 8, num_contexts: int = 4, num_actions: int = 4, reward_noise: float = 0.0):
        for name, value, low in (("num_agents", num_agents, 1), ("num_contexts", num_contexts, 1),
                                 ("num_actions", num_actions, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"env_kwargs {name}={value!r} is invalid: allowed is an integer >= {low}")
        if isinstance(reward_noise, bool) or not isinstance(reward_noise, (int, float)) or not reward_noise >= 0:
            raise ValueError(f"env_kwargs reward_noise={reward_noise!r} is invalid: allowed is a number >= 0")
        self.num_agents, self.num_contexts, self.num_actions = num_agents, num_contexts, num_actions
        self.reward_noise = float(reward_noise)
        self.agents = [f"agent_{i}" for i in range(num_agents)]
        self.max_steps = 0  # one transition per episode (the evaluation horizon is max_steps + 1)

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.num_contexts,))

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def draw_contexts(self, key: chex.PRNGKey) -> chex.Array:
        """``[N]`` each agent's context, independent and uniform."""
        return jax.random.randint(key, (self.num_agents,), 0, self.num_contexts)

    def reset(self, key: chex.PRNGKey) -> tuple[dict[str, chex.Array], CreditState]:
        state = CreditState(context=self.draw_contexts(key), step=jnp.zeros((), jnp.int32))
        return self._obs(state), state

    def step_env(self, key: chex.PRNGKey, state: CreditState, actions: Mapping[str, chex.Array]):
        chosen = jnp.stack([actions[a] for a in self.agents])
        reward = self.exact_q(state.context, chosen) + self.reward_noise * jax.random.normal(key)
        done = jnp.ones((), bool)
        dones = {**{a: done for a in self.agents}, "__all__": done}
        return self._obs(state), state.replace(step=state.step + 1), {a: reward for a in self.agents}, dones, {}

    def exact_q(self, context: chex.Array, actions: chex.Array) -> chex.Array:
        """The team reward without noise, i.e. the exact critic: ``[N]``, ``[N]`` -> ``[]`` (``credit_q``)."""
        return credit_q(context, actions, self.num_actions)

    def _obs(self, state: CreditState) -> dict[str, chex.Array]:
        one_hot = jax.nn.one_hot(state.context, self.num_contexts)
        return {a: one_hot[i] for i, a in enumerate(self.agents)}


class PairsCreditGame(CreditGame):
    """The pairs game: agents (2m, 2m+1) are partners; each observes its pair's context one-hot only.

    Observations carry no pair or partner index: a policy needs only the context to act right, and the
    pairing is fixed by agent index, which the critics see through their one-hot agent ids (and through the
    position of each observation in the global state). A critic that pools the others' (o_j, a_j) without
    their ids cannot tell the partner from another pair with the same context.
    """

    def __init__(self, num_agents: int = 8, num_contexts: int = 4, num_actions: int = 4, reward_noise: float = 0.0):
        if isinstance(num_agents, bool) or not isinstance(num_agents, int) or num_agents < 2 or num_agents % 2:
            raise ValueError(f"env_kwargs num_agents={num_agents!r} is invalid for env='credit_pairs': allowed is an "
                             "even integer >= 2 (agents play in the pairs (0, 1), (2, 3), ...)")
        super().__init__(num_agents, num_contexts, num_actions, reward_noise)

    def draw_contexts(self, key: chex.PRNGKey) -> chex.Array:
        """``[N]`` one uniform context per pair, repeated for both partners."""
        return jnp.repeat(jax.random.randint(key, (self.num_agents // 2,), 0, self.num_contexts), 2)

    def exact_q(self, context: chex.Array, actions: chex.Array) -> chex.Array:
        """The team reward without noise, i.e. the exact critic: ``[N]``, ``[N]`` -> ``[]`` (``pairs_q``)."""
        return pairs_q(context, actions, self.num_actions)


def _check_share_args(num_agents: int, k: int, p: float, reward_noise: float, even: bool) -> None:
    """ValueError naming the first argument of a closed-form others_share that is out of its domain."""
    low = 2 if even else 1
    if isinstance(num_agents, bool) or not isinstance(num_agents, int) or num_agents < low or (even and num_agents % 2):
        kind = "an even integer" if even else "an integer"
        raise ValueError(f"num_agents={num_agents!r} is invalid: allowed is {kind} >= {low}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} is invalid: allowed is an integer >= 1")
    if not 0.0 < p < 1.0:  # at p = 0 or 1 nothing varies and the share is 0/0
        raise ValueError(f"p={p!r} is invalid: allowed is a probability strictly between 0 and 1")
    if not reward_noise >= 0.0:
        raise ValueError(f"reward_noise={reward_noise!r} is invalid: allowed is a number >= 0")


def credit_others_share(num_agents: int, k: int, p: float, reward_noise: float = 0.0) -> float:
    """others_share (``perla_jax.advantages.others_share``) of the exact critic on ``credit``, every agent
    succeeding with probability p (v = p(1-p)), K samples of the others, reward noise of scale sigma.

    Scaled by N, with m_j the K-sample mean of x_j (variance v/K) and V^, Q^ averaging the same samples:
    N delta = (x_i - p) + sum_{j!=i} (x_j - m_j) + N eps and N c = sum_{j!=i} (x_j - m_j), so Cov(delta, c) =
    Var(c) = (N-1)(1+1/K) v / N^2 and the share is Var(c) / Var(delta) =
    (N-1)(1+1/K) v / ((N-1)(1+1/K) v + v + N^2 sigma^2).
    """
    _check_share_args(num_agents, k, p, reward_noise, even=False)
    v = p * (1.0 - p)
    others = (num_agents - 1) * (1.0 + 1.0 / k) * v
    return others / (others + v + num_agents**2 * reward_noise**2)


def pairs_others_share(num_agents: int, k: int, p: float, reward_noise: float = 0.0) -> float:
    """others_share of the exact critic on ``credit_pairs`` (as ``credit_others_share``): M = N/2 pairs.

    Agent i, partner j; xbar_j the K-sample mean of x_j (variance v/K, v = p(1-p)); the other M-1 pairs'
    products y (mean p^2, variance w = p^2(1-p^2)) enter both delta and c as D = y - ybar (variance (1+1/K) w),
    independent of the pair's terms. Since sum_a pi_i(a) x_i(a) = p, scaled by M:
      M delta = x_i x_j - p xbar_j + sum D + M eps,    M c = x_i (x_j - xbar_j) + sum D.
    With x_i, x_j, xbar_j independent:
      Var(M c)     = (1+1/K) (p v + (M-1) w)
      Cov          = p v + p^2 v / K + (M-1)(1+1/K) w
      Var(M delta) = p^2 (1-p^2) + p^2 v / K + (M-1)(1+1/K) w + M^2 sigma^2
    and the share is Cov^2 / (Var(delta) Var(c)). Unlike the additive game Cov != Var(c): delta holds the
    partner's sample noise scaled by p, c by x_i. At N = 2 and K -> inf it is 1/(1+p).
    """
    _check_share_args(num_agents, k, p, reward_noise, even=True)
    m, v, w = num_agents // 2, p * (1.0 - p), p**2 * (1.0 - p**2)
    rest = (m - 1) * (1.0 + 1.0 / k) * w
    cov = p * v + p**2 * v / k + rest
    var_c = (1.0 + 1.0 / k) * p * v + rest
    var_delta = p**2 * (1.0 - p**2) + p**2 * v / k + rest + m**2 * reward_noise**2
    return cov**2 / (var_delta * var_c)


@dataclasses.dataclass(frozen=True)
class CreditEnv(MultiAgentEnv):
    """Every episode ends after its one step in a terminal state (nothing to bootstrap)."""

    def episode_end(self, inner: Any, done: chex.Array, info: Mapping[str, Any]) -> tuple[chex.Array, ...]:
        return done, jnp.zeros_like(done), jnp.zeros_like(done)


KWARGS = ("num_agents", "num_contexts", "num_actions", "reward_noise")  # the same for both games
GAMES = {"credit": CreditGame, "credit_pairs": PairsCreditGame}


def make_credit(full_name: str, env_kwargs: Mapping[str, Any], map_name: str) -> CreditEnv:
    del map_name  # no maps (the registry refuses one before this is called)
    unknown = sorted(set(env_kwargs) - set(KWARGS))
    if unknown:
        raise ValueError(f"env_kwargs {unknown} are unknown for env={full_name!r}: allowed are {', '.join(KWARGS)}")
    return CreditEnv(name=full_name, env=GAMES[full_name](**dict(env_kwargs)))


FAMILY = EnvFamily(name="credit", envs=tuple(GAMES), make=make_credit)
