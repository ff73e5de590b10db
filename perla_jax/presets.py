"""Hyperparameter presets that reproduce reference configurations, per environment family (``--preset``).

``jaxmarl``: the PPO settings of JaxMARL's baseline config for the family (FLAIROx/JaxMARL, ``baselines/``), for
every algorithm alike, so our MAPPO/IPPO/PERLA runs sit next to JaxMARL's published curves:

- MPE: ``IPPO/config/ippo_ff_mpe.yaml`` (commit 1daff54). Its network (two 64-unit tanh layers) is in the code,
  not the yaml; ours is the same.
- SMAX: ``MAPPO/config/mappo_homogenous_rnn_smax.yaml`` (commit ea4733c): 128-unit dense + GRU, relu, agent ids in
  the actors' observations, no entropy bonus, gradient clip 0.25, and its env kwargs.
- MABrax: ``IPPO/config/ippo_ff_mabrax.yaml`` (commit 3e3d637): 64 envs x 300 steps, value coefficient 4.5. Its
  network width is in the code, not the yaml; ours keeps its default.

JaxMARL's GAE stops at every ``done``, the time limit's too, so the preset sets ``time_limit="terminal"``.
JaxMARL uses one learning rate for actor and critic (``LR``); it becomes both of ours. Fields given explicitly
(on the command line, or by the caller) win over the preset's.
"""

from __future__ import annotations

from typing import Any, Mapping

from perla_jax.config import Config
from perla_jax.envs.registry import env_family

# JaxMARL's baselines compute GAE with (1 - done) on every episode end, the time limit's included: "terminal".
# JaxMARL's critics end in an orthogonally initialised layer of scale 1.0 (ours start at 0.01 by default).
PPO = dict(update_epochs=4, num_minibatches=4, gamma=0.99, gae_lambda=0.95, anneal_lr=True, time_limit="terminal",
           critic_out_scale=1.0)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "jaxmarl": {
        "mpe": dict(PPO, actor_lr=2.5e-4, critic_lr=2.5e-4, num_envs=16, num_steps=128, total_timesteps=10_000_000,
                    clip_eps=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, activation="tanh", network="ff",
                    actor_hidden=(64, 64), critic_hidden=(64, 64)),
        "smax": dict(PPO, actor_lr=2e-3, critic_lr=2e-3, num_envs=128, num_steps=128, total_timesteps=10_000_000,
                     clip_eps=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.25, activation="relu", network="rnn",
                     actor_hidden=(128, 128), critic_hidden=(128, 128), actor_agent_id=True,
                     env_kwargs={"see_enemy_actions": True, "walls_cause_death": True, "attack_mode": "closest"}),
        "mabrax": dict(PPO, actor_lr=1e-3, critic_lr=1e-3, num_envs=64, num_steps=300, total_timesteps=10_000_000,
                       clip_eps=0.2, ent_coef=2e-6, vf_coef=4.5, max_grad_norm=0.5, activation="tanh", network="ff"),
    },
}


def preset_config(name: str, given: Mapping[str, Any]) -> Config:
    """The Config of preset ``name`` for the env in ``given`` (Config's default env if absent), with every field
    in ``given`` overriding the preset's; ValueError naming the bad preset or an env family it does not cover."""
    return Config(**preset_fields(name, given))


def preset_fields(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The Config fields ``preset_config`` builds from: the preset's for the env's family, ``given``'s over them
    (env kwargs merged key by key)."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is invalid: allowed are {', '.join(PRESETS)}")
    family = env_family(given.get("env", Config.env)).name  # a dataclass field's default is its class attribute
    if family not in PRESETS[name]:
        raise ValueError(f"preset={name!r} has no settings for env family {family!r}: allowed families are "
                         f"{', '.join(PRESETS[name])}")
    preset = PRESETS[name][family]
    fields = {**preset, **given}
    if "env_kwargs" in preset and "env_kwargs" in given:  # the caller's env kwargs add to (and override) the preset's
        fields["env_kwargs"] = {**preset["env_kwargs"], **given["env_kwargs"]}
    return fields
