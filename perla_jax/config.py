"""Every hyperparameter of a training run, validated before anything compiles."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from perla_jax.advantages import ADVANTAGE_ESTIMATORS
from perla_jax.algos import ALGO_SPECS, ALGOS, AlgoSpec
from perla_jax.envs.base import TIME_LIMITS  # noqa: F401  (the choices, beside the others, for cli)
from perla_jax.envs.registry import check_map, check_time_limit, env_family
from perla_jax.field_checks import (
    MAX_INT,
    MAX_SEED,
    as_int,
    as_kwargs,
    as_sizes,
    check_bool,
    check_choice,
    check_int_at_least,
    check_range,
    check_str,
)

ADVANTAGES = tuple(ADVANTAGE_ESTIMATORS)
ACTIVATIONS = ("tanh", "relu")
CRITIC_ACTION_LAYERS = ("first", "last")
CRITIC_ARCHS = ("factored", "mlp")
CRITIC_POOLS = ("mean", "attention")
DEFAULT_CRITIC_ARCH = "factored"  # what critic_arch="" resolves to for a Q-critic (docs/algorithms.md, "Defaults and why")
CRITIC_TARGETS = ("marginal", "joint")
NETWORKS = ("ff", "rnn")
# Fields that only some critics read (``Config.inapplicable``): a value other than the default for a critic that
# ignores it is refused, so a run is never labelled with a setting that did nothing.
Q_CRITIC_FIELDS = ("k", "advantage", "critic_target", "critic_arch", "own_action_samples")
ARCH_FIELDS = {
    "factored": ("critic_rank", "critic_others_scale", "critic_state_path", "critic_pool"),
    "mlp": ("critic_action_layer",),
}
# Fields added after runs were recorded without them, with the value those runs were trained with: a stored
# config.json that lacks one reads back as what it ran (not as today's default).
LEGACY_VALUES = {
    "time_limit": "bootstrap", "critic_rank": 16, "critic_others_scale": 0.0, "critic_out_scale": 1.0,
    "critic_state_path": False, "critic_pool": "mean", "value_norm": False, "pg_spread_every": 1,
}
# critic_arch before it existed: the Q-critics were the MLP, the V-critics have none (see ``from_dict``).
LEGACY_Q_CRITIC_ARCH = "mlp"


@dataclasses.dataclass(frozen=True)
class Config:
    """Training configuration.

    ``critic_time_chunk`` is how many time steps of the K-sample critic batch (K x agents x envs values
    per step) are evaluated at once after a rollout; smaller values lower peak memory, not the results' meaning
    (only their float rounding). One step at a time is also the fastest on CPU (each step's batch stays in cache).

    ``pg_spread_every``: ``pg_var`` / ``pg_snr`` (``diagnostics``) only at updates whose count is a multiple of it,
    NaN at the others; they cost about a sixth of an update at 8 seeds on CPU. Training does not change.

    ``critic_target`` is what the PERLA Q-critic regresses onto the TD(lambda) returns (which bootstrap on the
    marginal V^ either way): ``marginal`` (Algorithm 1 read literally) regresses the K-sample mean Q^_i(s, a_i),
    which learns to ignore the others' actions (a squared loss through a mean over independent samples of a_-i
    is minimised by a critic that does not depend on them); ``joint`` regresses Q(s, a_i, a_-i) at the joint
    action taken (for Box actions, the real action vectors), the critic the theorems assume, and needs no K
    samples in the minibatch loss.

    ``critic_action_layer`` is the hidden layer of the PERLA Q-critic that the others' one-hot actions
    feed: ``first`` is COMA's layout (actions beside the state at the input), ``last`` fuses them into
    the last hidden layer, so each of the K samples costs one lookup and one activation instead of a
    pass through the hidden layers (see ``networks.QCritic``). Both are MLPs on (state, others' actions).

    ``critic_arch`` is the PERLA Q-critic's architecture (empty: ``DEFAULT_CRITIC_ARCH``; refused for the
    state-value critics of MAPPO and IPPO): ``factored`` (``networks.factored``) encodes every agent with one
    shared encoder phi(o_j, a_j, id_j) into ``critic_rank`` numbers, pools them over the others (mean over
    j != i) and adds the pool to agent i's own path (which also reads the global state when
    ``critic_state_path`` and the critic is centralised); ``critic_pool="attention"`` replaces the mean by
    attention weights over j != i computed from the agents' observations and ids; ``mlp`` is one MLP on (state, others' one-hot
    actions) with the actions entering at ``critic_action_layer`` (``networks.QCritic``). ``critic_others_scale``
    is the initial scale of phi's output layer (0: the others' part starts at zero, so an untrained critic adds
    no noise from them), and ``critic_out_scale`` the initial scale of every critic's output layer (V critics
    too).

    ``value_norm`` standardises every critic's regression targets by running statistics and de-standardises its
    outputs wherever a value is used (``perla_jax.value_norm``, MAPPO's ValueNorm).

    ``eval_every`` > 0 makes ``experiments/run.py`` evaluate the greedy policies on ``eval_episodes``
    episodes per seed whenever a chunk of updates passes a multiple of ``eval_every`` (between compiled
    chunks, so the jitted training path is unchanged); 0 (default) turns it off.

    ``network`` is ``ff`` (MLPs) or ``rnn`` (a GRU after the first hidden layer of actor and critic, reset at
    episode starts; minibatches then hold whole rollout sequences of ``num_envs / num_minibatches``
    environments); empty (default) picks the environment's default: ``rnn`` on SMAX, as in JaxMARL's SMAX
    baselines and the PERLA paper's MAPPO, ``ff`` elsewhere. The PERLA Q-critic's GRU sits in its state path,
    before the others' actions enter, so ``rnn`` needs ``critic_action_layer="last"`` and at least two
    critic layers.

    ``time_limit`` is what a step at the environment's time limit means to the critics (``envs.base.TIME_LIMITS``):
    ``bootstrap`` (a truncation: the targets bootstrap on the value of the state reached), ``terminal`` (the
    episode's end: no bootstrap) or ``observe`` (terminal, and the fraction of the time limit left joins the
    critic's input); empty (default) picks the environment family's default (``EnvFamily.default_time_limit``).
    It changes nothing where episodes never hit a time limit (the credit game). Runs recorded before the field
    existed bootstrapped (``from_dict``).

    ``map_name`` is the SMAX map (a name in jaxmarl's scenario table, e.g. ``3m``, ``2s3z``); it is
    required with ``env="smax"`` and refused with any other env.

    ``own_action_samples`` (M) is used by PERLA on continuous actions only: V^_i(s) = E_{a_i~pi_i} Q^_i(s, a_i)
    is estimated with M own-action samples crossed with the K joint samples (M*K critic values per agent-step).

    Step counting follows JaxMARL: ``total_timesteps`` counts environment transitions summed over the
    ``num_envs`` parallel environments (one transition moves every agent once), so one update consumes
    ``num_envs * num_steps`` of them.
    """

    env: str = "mpe"
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    map_name: str = ""
    algo: str = "perla_mappo"
    advantage: str = "perla_cv"
    k: int = 16
    num_envs: int = 16
    num_steps: int = 128
    total_timesteps: int = 10_000_000
    update_epochs: int = 4
    num_minibatches: int = 4
    actor_lr: float = 2.5e-4
    critic_lr: float = 1e-3
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    actor_hidden: tuple[int, ...] = (64, 64)
    critic_hidden: tuple[int, ...] = (64, 64)
    critic_arch: str = ""
    critic_action_layer: str = "last"
    critic_rank: int = 16
    critic_others_scale: float = 0.0
    critic_state_path: bool = False
    critic_pool: str = "mean"
    critic_out_scale: float = 0.01
    critic_target: str = "joint"
    value_norm: bool = False
    activation: str = "tanh"
    network: str = ""
    time_limit: str = ""
    actor_agent_id: bool = False
    share_actor: bool = True
    critic_time_chunk: int = 1
    pg_spread_every: int = 1
    eval_every: int = 0
    eval_episodes: int = 16
    own_action_samples: int = 4
    num_seeds: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        # Tuples may arrive as lists from JSON or a CLI; normalise after checking.
        for name in ("actor_hidden", "critic_hidden"):
            object.__setattr__(self, name, as_sizes(name, getattr(self, name)))
        object.__setattr__(self, "env_kwargs", as_kwargs("env_kwargs", self.env_kwargs))
        object.__setattr__(self, "total_timesteps", as_int("total_timesteps", self.total_timesteps))
        for name in ("env", "map_name"):
            check_str(name, getattr(self, name))
        for name in ("anneal_lr", "actor_agent_id", "share_actor", "critic_state_path", "value_norm"):
            check_bool(name, getattr(self, name))
        check_choice("algo", self.algo, ALGOS)
        check_choice("advantage", self.advantage, ADVANTAGES)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("critic_action_layer", self.critic_action_layer, CRITIC_ACTION_LAYERS)
        check_choice("critic_target", self.critic_target, CRITIC_TARGETS)
        check_choice("critic_pool", self.critic_pool, CRITIC_POOLS)
        positive_ints = (
            "k", "num_envs", "num_steps", "update_epochs", "num_minibatches", "num_seeds", "critic_time_chunk",
            "own_action_samples", "critic_rank", "pg_spread_every",
        )
        for name in positive_ints:
            check_int_at_least(name, getattr(self, name), 1)
        check_int_at_least("seed", self.seed, 0, MAX_SEED)
        check_int_at_least("eval_every", self.eval_every, 0)
        check_int_at_least("eval_episodes", self.eval_episodes, 1)
        for name in ("actor_lr", "critic_lr", "max_grad_norm"):
            check_range(name, getattr(self, name), 0.0, math.inf, low_open=True)
        for name in ("gamma", "gae_lambda"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_range("clip_eps", self.clip_eps, 0.0, math.inf, low_open=True)
        for name in ("ent_coef", "vf_coef", "critic_others_scale", "critic_out_scale"):
            check_range(name, getattr(self, name), 0.0, math.inf)
        self._check_batch_sizes()
        self._check_critic_arch()
        self._check_applicable()
        family = env_family(self.env)
        check_map(self.env, self.map_name)
        self._check_network(family.default_network, family.continuous)
        if self.time_limit == "":
            object.__setattr__(self, "time_limit", family.default_time_limit)
        check_time_limit(self.time_limit)

    def _check_batch_sizes(self) -> None:
        """The rollout batch must split into minibatches and fit XLA's int32 step counters."""
        batch = self.num_envs * self.num_steps
        if batch > MAX_INT:
            raise ValueError(
                f"num_envs*num_steps={batch} (num_envs={self.num_envs}, num_steps={self.num_steps}) is too large: "
                f"allowed is num_envs*num_steps <= {MAX_INT} (XLA counts steps in int32)"
            )
        if batch % self.num_minibatches:
            raise ValueError(
                f"num_minibatches={self.num_minibatches} does not divide num_envs*num_steps={batch}: "
                f"allowed are divisors of {batch}"
            )
        if self.total_timesteps < batch:
            raise ValueError(
                f"total_timesteps={self.total_timesteps} is below one update (num_envs*num_steps={batch}): "
                f"allowed is total_timesteps >= {batch}"
            )
        if self.total_timesteps > MAX_INT:
            raise ValueError(
                f"total_timesteps={self.total_timesteps} is invalid: allowed is total_timesteps <= {MAX_INT} "
                "(the env_steps metric counts in int32)"
            )
        grad_steps = self.num_updates * self.update_epochs * self.num_minibatches
        if grad_steps > MAX_INT:
            raise ValueError(
                f"total_timesteps={self.total_timesteps} with update_epochs={self.update_epochs} and "
                f"num_minibatches={self.num_minibatches} makes {grad_steps} gradient steps: allowed are at most "
                f"{MAX_INT} (the optimiser counts them in int32)"
            )

    def _check_critic_arch(self) -> None:
        """Only a joint-action Q-critic has an architecture to choose; empty picks the Q-critics' default."""
        q_algos = ", ".join(name for name, spec in ALGO_SPECS.items() if spec.critic == "q")
        if not self.uses_q_critic:
            if self.critic_arch != "":
                raise ValueError(
                    f"critic_arch={self.critic_arch!r} does not apply to algo={self.algo!r} (a state-value critic): "
                    f"it applies to the joint-action Q-critics of {q_algos}"
                )
            return
        if self.critic_arch == "":
            object.__setattr__(self, "critic_arch", DEFAULT_CRITIC_ARCH)
        check_choice("critic_arch", self.critic_arch, CRITIC_ARCHS)

    def inapplicable(self) -> dict[str, str]:
        """Field -> what it applies to, for every field this Config's critic never reads."""
        q_algos = ", ".join(name for name, spec in ALGO_SPECS.items() if spec.critic == "q")
        if not self.uses_q_critic:
            names = Q_CRITIC_FIELDS + sum(ARCH_FIELDS.values(), ())
            return {name: f"the joint-action Q-critics of {q_algos}" for name in names}
        # own_action_samples applies to Box actions only; make_critic refuses it where the env, known there, is
        # discrete (Config's env name may not be the env a trainer is given).
        return {name: f"critic_arch={arch!r}" for arch, names in ARCH_FIELDS.items() if arch != self.critic_arch
                for name in names}

    def _check_applicable(self) -> None:
        """Refuses a non-default value of a field the critic never reads (``inapplicable``)."""
        for name, applies_to in self.inapplicable().items():
            if getattr(self, name) != field_default(name):
                raise ValueError(
                    f"{name}={getattr(self, name)!r} does nothing with algo={self.algo!r}"
                    f"{'' if not self.uses_q_critic else f', critic_arch={self.critic_arch!r}'} on env={self.env!r}: "
                    f"it applies to {applies_to}; leave it at its default ({field_default(name)!r})"
                )

    def _check_network(self, default_network: str, continuous: bool) -> None:
        if self.network == "":
            object.__setattr__(self, "network", default_network)
        check_choice("network", self.network, NETWORKS)
        if self.network != "rnn":
            return
        if continuous:
            raise ValueError(f"network='rnn' is not supported for continuous-action env={self.env!r}: allowed is ff")
        if self.num_envs % self.num_minibatches:
            raise ValueError(
                f"num_minibatches={self.num_minibatches} does not divide num_envs={self.num_envs}: network='rnn' "
                f"minibatches hold whole sequences, so allowed are divisors of {self.num_envs}"
            )
        if self.uses_q_critic and self.critic_arch == "mlp" and self.critic_action_layer != "last":
            raise ValueError(
                f"critic_action_layer={self.critic_action_layer!r} is invalid with network='rnn': allowed is 'last' "
                "(the sampled actions enter after the GRU)"
            )
        if self.uses_q_critic and len(self.critic_hidden) < 2:
            raise ValueError(
                f"critic_hidden={self.critic_hidden!r} is invalid with network='rnn' and algo={self.algo!r}: allowed "
                "are two or more layers (the GRU, then the layer the sampled actions enter)"
            )

    @property
    def batch_size(self) -> int:
        """Environment transitions per update."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    @property
    def minibatch_size(self) -> int:
        """Environment transitions (each carrying all agents) per minibatch."""
        return self.batch_size // self.num_minibatches

    @property
    def algo_spec(self) -> AlgoSpec:
        return ALGO_SPECS[self.algo]

    @property
    def uses_q_critic(self) -> bool:
        return self.algo_spec.critic == "q"

    @property
    def centralised_critic(self) -> bool:
        return self.algo_spec.centralised

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}: allowed are {sorted(known)}")
        legacy = dict(LEGACY_VALUES)
        if "critic_arch" not in values and ALGO_SPECS.get(values.get("algo", cls.algo), None) is not None:
            if ALGO_SPECS[values.get("algo", cls.algo)].critic == "q":
                legacy["critic_arch"] = LEGACY_Q_CRITIC_ARCH
        # Settings the run's critic never read did nothing: they read back at their defaults, so runs recorded
        # before they were refused (``_check_applicable``) still load.
        return cls.applicable_of({**legacy, **values})

    @classmethod
    def applicable_of(cls, values: Mapping[str, Any]) -> "Config":
        """The Config of ``values`` with the settings its critic never reads (``inapplicable``) at their defaults:
        one settings dict shared by several algorithms (``k`` beside ``algo="mappo"``) builds each one's Config.
        ``Config(**values)`` refuses them instead. ``critic_arch`` decides which of its options apply and is kept."""
        restricted = [name for name in Q_CRITIC_FIELDS + sum(ARCH_FIELDS.values(), ()) if name != "critic_arch"]
        probe = cls(**{**values, **{name: field_default(name) for name in restricted}})
        return cls(**{**values, **{name: field_default(name) for name in probe.inapplicable() if name != "critic_arch"}})


def field_default(name: str) -> Any:
    """The default of the scalar Config field ``name``."""
    return Config.__dataclass_fields__[name].default
