"""``--preset jaxmarl`` against a table copied by hand from JaxMARL's baseline yaml files (FLAIROx/JaxMARL,
baselines/IPPO/config/ippo_ff_mpe.yaml @1daff54, baselines/MAPPO/config/mappo_homogenous_rnn_smax.yaml @ea4733c,
baselines/IPPO/config/ippo_ff_mabrax.yaml @3e3d637), in JaxMARL's own key names."""

from __future__ import annotations

import pytest

from perla_jax import Config, command
from perla_jax.cli import config_from_args
from perla_jax.command import build_train_parser
from perla_jax.presets import preset_config

JAXMARL = {  # env given to perla_jax -> JaxMARL's yaml values
    ("mpe", ""): {"LR": 2.5e-4, "NUM_ENVS": 16, "NUM_STEPS": 128, "TOTAL_TIMESTEPS": 1e7, "UPDATE_EPOCHS": 4,
                  "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95, "CLIP_EPS": 0.2, "ENT_COEF": 0.01,
                  "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5, "ACTIVATION": "tanh", "ANNEAL_LR": True},
    ("smax", "2s3z"): {"LR": 0.002, "NUM_ENVS": 128, "NUM_STEPS": 128, "TOTAL_TIMESTEPS": 1e7, "FC_DIM_SIZE": 128,
                       "GRU_HIDDEN_DIM": 128, "UPDATE_EPOCHS": 4, "NUM_MINIBATCHES": 4, "GAMMA": 0.99,
                       "GAE_LAMBDA": 0.95, "CLIP_EPS": 0.2, "ENT_COEF": 0.0, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.25,
                       "ACTIVATION": "relu", "OBS_WITH_AGENT_ID": True, "ANNEAL_LR": True,
                       "ENV_KWARGS": {"see_enemy_actions": True, "walls_cause_death": True, "attack_mode": "closest"}},
    ("mabrax", ""): {"LR": 1e-3, "NUM_ENVS": 64, "NUM_STEPS": 300, "TOTAL_TIMESTEPS": 1e7, "UPDATE_EPOCHS": 4,
                     "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95, "CLIP_EPS": 0.2, "ENT_COEF": 2e-6,
                     "VF_COEF": 4.5, "MAX_GRAD_NORM": 0.5, "ACTIVATION": "tanh", "ANNEAL_LR": True},
}
OURS = {  # JaxMARL key -> how it reads off our Config
    "LR": lambda c: (c.actor_lr, c.critic_lr), "NUM_ENVS": lambda c: c.num_envs, "NUM_STEPS": lambda c: c.num_steps,
    "TOTAL_TIMESTEPS": lambda c: c.total_timesteps, "UPDATE_EPOCHS": lambda c: c.update_epochs,
    "NUM_MINIBATCHES": lambda c: c.num_minibatches, "GAMMA": lambda c: c.gamma, "GAE_LAMBDA": lambda c: c.gae_lambda,
    "CLIP_EPS": lambda c: c.clip_eps, "ENT_COEF": lambda c: c.ent_coef, "VF_COEF": lambda c: c.vf_coef,
    "MAX_GRAD_NORM": lambda c: c.max_grad_norm, "ACTIVATION": lambda c: c.activation,
    "ANNEAL_LR": lambda c: c.anneal_lr, "FC_DIM_SIZE": lambda c: c.actor_hidden[0],
    "GRU_HIDDEN_DIM": lambda c: c.actor_hidden[0], "OBS_WITH_AGENT_ID": lambda c: c.actor_agent_id,
    "ENV_KWARGS": lambda c: dict(c.env_kwargs),
}


@pytest.mark.parametrize("env, map_name", list(JAXMARL))
def test_jaxmarl_preset_matches_the_reference_yaml(env, map_name):
    cfg = preset_config("jaxmarl", {"env": env, "map_name": map_name, "algo": "mappo"})
    for key, value in JAXMARL[env, map_name].items():
        want = (value, value) if key == "LR" else value
        assert OURS[key](cfg) == want, key
    assert cfg.network == ("rnn" if env == "smax" else "ff")
    assert cfg.time_limit == "terminal"  # JaxMARL's GAE multiplies the bootstrap by (1 - done) at the time limit too


def test_explicit_fields_override_the_preset_and_env_kwargs_merge():
    cfg = preset_config("jaxmarl", {"env": "smax", "map_name": "3m", "num_envs": 8, "env_kwargs": {"max_steps": 50}})
    assert cfg.num_envs == 8 and cfg.num_steps == 128
    assert dict(cfg.env_kwargs) == {"see_enemy_actions": True, "walls_cause_death": True, "attack_mode": "closest",
                                    "max_steps": 50}


def test_unknown_preset_and_uncovered_family_are_refused():
    with pytest.raises(ValueError, match="preset='mava' is invalid: allowed are jaxmarl"):
        preset_config("mava", {})
    with pytest.raises(ValueError, match="no settings for env family 'credit': allowed families are mpe, smax, mabrax"):
        preset_config("jaxmarl", {"env": "credit"})


def test_run_cli_applies_the_preset_under_explicit_options(tmp_path):
    argv = ["--preset", "jaxmarl", "--env", "mpe", "--num-envs", "4", "--out", str(tmp_path / "r")]
    args = build_train_parser().parse_args(argv)
    given = vars(build_train_parser(config_defaults=False).parse_args(argv))
    cfg = config_from_args(args, given)
    # MPE's preset is our default but for the budget, JaxMARL's no-bootstrap time limit and its critic (learning
    # rate 2.5e-4, output layer at scale 1)
    assert cfg == Config(num_envs=4, total_timesteps=10_000_000, time_limit="terminal", critic_lr=2.5e-4,
                         critic_out_scale=1.0)
    with pytest.raises(SystemExit):
        command.train_main(["--resume", str(tmp_path), "--preset", "jaxmarl"])
