"""The experiments behind BENCHMARKS.md, as data: each study is a set of Configs that differ only in the
fields compared, trained over common seeds, with one run as the baseline of the paired differences.

``experiments/suite.py`` runs them; a study's ``paper`` budget says how many env steps per seed and how many
seeds make its table; ``cpu`` is the smaller budget a study too large for a CPU session gets there (the
``paper`` one where the study names none), and the ``smoke`` budget shrinks everything so the whole path runs
in the tests. Adding a study is adding one ``Study`` to ``STUDIES``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from perla_jax import Config
from perla_jax.envs.base import TIME_LIMITS
from perla_jax.presets import PRESETS

BUDGETS = ("smoke", "cpu", "paper")
# The smoke budget: two updates of tiny networks over two seeds, whatever the study.
SMOKE = dict(total_timesteps=2 * 4 * 4, num_envs=4, num_steps=4, num_minibatches=2, update_epochs=1, num_seeds=2,
             actor_hidden=(8,), critic_hidden=(8, 8))

PERLA_GRID = {  # perla_mappo K=16: critic target x advantage estimator (issue 11, item 5)
    f"perla_mappo {target} {advantage}": dict(algo="perla_mappo", critic_target=target, advantage=advantage, k=16)
    for target in ("joint", "marginal")
    for advantage in ("td", "perla_cv", "perla_cv1")  # counterfactual: retired 2026-11-26, see README
}
BASELINES = {
    "mappo": dict(algo="mappo"),
    "ippo": dict(algo="ippo"),
    "perla_ippo joint td": dict(algo="perla_ippo", critic_target="joint", advantage="td", k=16),
}
K_SWEEP = (1, 2, 4, 8, 16, 32, 64)  # issue 12, item 4
K_FAMILIES = {  # the K sweeps: the defaults-study winners (joint target; td and its control-variate twin)
    f"perla_mappo joint {advantage} K={k}": dict(algo="perla_mappo", critic_target="joint", advantage=advantage, k=k)
    for advantage in ("td", "perla_cv")
    for k in (K_SWEEP if advantage == "td" else (1, 4, 16, 64))
}
# The four algorithms of the agent-scaling studies, PERLA at its defaults (perla_cv since 2026-12-03).
SCALING_ALGOS = {"mappo": dict(algo="mappo"), "ippo": dict(algo="ippo"),
                 "perla_mappo": dict(algo="perla_mappo"), "perla_ippo": dict(algo="perla_ippo")}
BENCHMARK_ALGOS = {name: SCALING_ALGOS[name] for name in ("mappo", "ippo", "perla_mappo")}  # issue 12, item 5
# PERLA-MAPPO's td advantage (the default until 2026-12-03): what the control variate's share of a lead is measured
# against (PERLA_PARTS).
PERLA_MAPPO_TD = PERLA_GRID["perla_mappo joint td"]


# The critic study (issue 24): every algorithm at the defaults, PERLA-MAPPO's factored critic against the MLP
# critic it replaced and against its own td advantage (which the control variate's gain is measured from).
CRITIC_ALGOS = {"mappo": dict(algo="mappo"), "ippo": dict(algo="ippo"), "perla_mappo": dict(algo="perla_mappo"),
                "perla_mappo mlp": dict(algo="perla_mappo", critic_arch="mlp"),
                "perla_mappo td": dict(algo="perla_mappo", advantage="td")}
# The critic settings before issue 24 (learning rate 2.5e-4, output layer at scale 1, the MLP Q-critic, the td
# advantage) against today's defaults, on MPE, where the defaults must not get worse.
LEGACY_CRITIC = dict(critic_lr=2.5e-4, critic_out_scale=1.0)
CRITIC_DEFAULTS_MPE = {"mappo": dict(algo="mappo"), "mappo legacy critic": dict(algo="mappo", **LEGACY_CRITIC),
                       "ippo": dict(algo="ippo"), "ippo legacy critic": dict(algo="ippo", **LEGACY_CRITIC),
                       "perla_mappo": dict(algo="perla_mappo"),
                       "perla_mappo legacy critic": dict(algo="perla_mappo", critic_arch="mlp", advantage="td",
                                                         **LEGACY_CRITIC)}
# PERLA-MAPPO at its defaults (K = 16, perla_cv) against the td advantage (the benchmark studies' PERLA-MAPPO until
# their reruns) and against one sample of the others' actions: which part of a lead the control variate carries, and
# which the K samples.
PERLA_PARTS = {"perla_mappo": dict(algo="perla_mappo"), "perla_mappo td": PERLA_MAPPO_TD,
               "perla_mappo K=1": dict(algo="perla_mappo", k=1)}
# Value normalisation (perla_jax.value_norm) for each algorithm, against the same algorithm without it.
VALUE_NORM_ALGOS = {f"{name}{' value norm' if norm else ''}": dict(algo=name, value_norm=norm)
                    for name in ("mappo", "ippo", "perla_mappo") for norm in (False, True)}


def over_agents(counts: tuple[int, ...], env_kwargs, algos=None) -> dict[str, dict[str, Any]]:
    """``"<algo> N=<n>"`` -> the algorithm's fields with ``env_kwargs(n)``, for every algorithm of ``algos``
    (default: the scaling algorithms) and n."""
    return {f"{name} N={n}": dict(fields, env_kwargs=env_kwargs(n)) for n in counts
            for name, fields in (SCALING_ALGOS if algos is None else algos).items()}


CRITIC_CAPACITY = {  # where the others' actions enter the MLP Q-critic, and its width (issue 11: the critic's
    # capacity to model state x others'-actions interactions limits what the control variate can remove)
    f"perla_mappo joint {advantage} {layer} {width}": dict(
        algo="perla_mappo", critic_arch="mlp", critic_target="joint", advantage=advantage, k=16, critic_action_layer=layer,
        critic_hidden=(width, width))
    for advantage in ("td", "perla_cv1")
    for layer in ("last", "first")
    for width in (64, 256)
}
# The prototype's setting of issue 11: 4 envs x 16 steps, 2 minibatches, 150 updates of a one-step game.
CREDIT = dict(env="credit", num_envs=4, num_steps=16, num_minibatches=2)


JAXMARL_BUDGET = dict(total_timesteps=10_000_000, num_seeds=8)  # JaxMARL's TOTAL_TIMESTEPS (SMAX and MABrax)
SMAX_BUDGETS = {
    "paper": JAXMARL_BUDGET,  # 610 updates of 128 x 128
    # 30 updates of 128 x 128; on 2 cores a study took 72 min on 3m, 110 min on 2s3z; 3s5z's is estimated at 3.5 h
    "cpu": dict(total_timesteps=491_520, num_seeds=8),
}


def smax_jaxmarl(map_name: str) -> dict[str, Any]:
    """The fields every run of a SMAX benchmark study shares: JaxMARL's mappo_homogenous_rnn_smax on ``map_name``."""
    return dict(PRESETS["jaxmarl"]["smax"], env="smax", map_name=map_name)


MABRAX_ANT = dict(PRESETS["jaxmarl"]["mabrax"], env="ant_4x2")  # JaxMARL's ippo_ff_mabrax on ant_4x2
MABRAX_BUDGETS = {
    "paper": JAXMARL_BUDGET,  # 520 updates of 64 x 300
    "cpu": dict(total_timesteps=499_200, num_seeds=8),  # 26 updates of 64 x 300
}


# The time-limit studies of SMAX and MABrax: MAPPO with each time limit, at the benchmark study's settings
MAPPO_TIME_LIMITS = {f"mappo {limit}": dict(algo="mappo", time_limit=limit) for limit in TIME_LIMITS}

AXIS_SUFFIX = {"k": " K=", "num_agents": " N="}  # Study.against -> how a label names its point on that axis


def axis_value(cfg: Config, against: str) -> int:
    """A run's point on a study's axis: its K, or its number of agents (env_kwargs ``num_agents``)."""
    return cfg.k if against == "k" else int(cfg.env_kwargs["num_agents"])


@dataclasses.dataclass(frozen=True)
class Study:
    name: str  # also the BENCHMARKS.md section and the runs' folder
    title: str
    common: Mapping[str, Any]  # Config fields every run shares
    runs: Mapping[str, Mapping[str, Any]]  # label -> the fields that differ
    paper: Mapping[str, Any]  # total_timesteps and num_seeds (at least 8) of the published table
    baseline: str = "mappo"  # a run labelled "<baseline> N=<n>" is the baseline of the runs ending in " N=<n>"
    against: str = ""  # "k" (labels end in " K=<k>") or "num_agents" (" N=<n>"): also plot against it
    threshold: float | None = None  # also report the updates each seed takes to reach this return
    cpu: Mapping[str, Any] | None = None  # the budget on a CPU, where smaller than ``paper`` (same seeds)
    jaxmarl_return: bool = False  # also report the final return x N, JaxMARL's MPELogWrapper convention
    score: str = "return"  # the metric the table compares ("win_rate" on SMAX, where JaxMARL reports it)

    def baseline_for(self, label: str) -> str:
        """The run ``label`` is paired with: ``"<baseline><suffix>"`` where the study has one for the label's
        K= or N= suffix (mappo at the same N), else ``baseline``."""
        suffix = AXIS_SUFFIX.get(self.against)
        if suffix and suffix in label:
            same_point = self.baseline + suffix + label.rsplit(suffix, 1)[1]
            if same_point in self.runs:
                return same_point
        return self.baseline

    def distinct_settings(self) -> dict[str, dict[str, Any]]:
        """Run name (its label less the K= or N= suffix) -> the fields it sets away from the study's common
        Config, beyond its algorithm and the study's axis: what a table prints beside the labels, so a label
        cannot hide a pinned setting (the benchmark studies' ``td`` advantage, say). Names that set nothing are
        left out."""
        common, suffix = Config(**self.common), AXIS_SUFFIX.get(self.against)
        axis_fields = {"k": ("k",), "num_agents": ("env_kwargs",)}.get(self.against, ())
        distinct = {}
        for label, fields in self.runs.items():
            name = label.rsplit(suffix, 1)[0] if suffix else label
            differ = {field: value for field, value in fields.items()
                      if field != "algo" and field not in axis_fields and getattr(common, field) != value}
            if differ:
                distinct[name] = differ
        return distinct

    def settings_sentence(self) -> str:
        """What a table says its runs share: the hyperparameters, naming every setting a run's label could hide."""
        named = "; ".join(f"{name}: " + ", ".join(f"{field}={value}" for field, value in fields.items())
                          for name, fields in self.distinct_settings().items())
        parts = ["the algorithm"]
        if self.against:
            parts.append(f"the {AXIS_SUFFIX[self.against].strip(' =')} the run label names")
        if named:
            parts.append(f"these settings ({named})")
        listed = f"{', '.join(parts[:-1])} and {parts[-1]}" if len(parts) > 1 else parts[0]
        return f"Hyperparameters identical except {listed}."

    def configs(self, budget: str) -> dict[str, Config]:
        """label -> validated Config at ``budget`` (ValueError naming the bad budget or field)."""
        if budget not in BUDGETS:
            raise ValueError(f"budget={budget!r} is invalid: allowed are {', '.join(BUDGETS)}")
        size = {"smoke": SMOKE, "cpu": self.cpu or self.paper, "paper": self.paper}[budget]
        return {label: Config(**{**self.common, **fields, **size}) for label, fields in self.runs.items()}


STUDIES: dict[str, Study] = {
    study.name: study
    for study in (
        Study(
            "defaults-credit8", "Credit-assignment game, N = 8 agents",
            common=dict(CREDIT, env_kwargs={"num_agents": 8}), runs={**BASELINES, **PERLA_GRID},
            paper=dict(total_timesteps=150 * 64, num_seeds=8),
        ),
        Study(
            "defaults-credit32", "Credit-assignment game, N = 32 agents",
            common=dict(CREDIT, env_kwargs={"num_agents": 32}), runs={**BASELINES, **PERLA_GRID},
            paper=dict(total_timesteps=150 * 64, num_seeds=8),
        ),
        Study(
            "k-credit32", "Credit-assignment game, N = 32 agents: K joint-action samples",
            common=dict(CREDIT, env_kwargs={"num_agents": 32}), runs={**{"mappo": BASELINES["mappo"]}, **K_FAMILIES},
            paper=dict(total_timesteps=150 * 64, num_seeds=8), against="k",
        ),
        Study(
            "critic-credit32", "Credit-assignment game, N = 32 agents: the Q-critic's capacity",
            common=dict(CREDIT, env_kwargs={"num_agents": 32}),
            # mappo with the wide critic too: a wider critic must not pass for PERLA's gain
            runs={"mappo": BASELINES["mappo"], "mappo 256": dict(algo="mappo", critic_hidden=(256, 256)),
                  **CRITIC_CAPACITY},
            paper=dict(total_timesteps=150 * 64, num_seeds=8),
        ),
        Study(
            "k-mpe", "MPE simple_spread (3 agents): K joint-action samples",
            common=dict(env="mpe", time_limit="bootstrap"),
            runs={"mappo": BASELINES["mappo"], **{label: fields for label, fields in K_FAMILIES.items()
                                                  if " td " in label and fields["k"] in (1, 4, 16)}},
            paper=dict(total_timesteps=1_000_000, num_seeds=8), against="k",
        ),
        Study(
            "scaling-credit", "Credit-assignment game: the number of agents N",
            common=CREDIT, runs=over_agents((2, 8, 32, 64), lambda n: {"num_agents": n}),
            paper=dict(total_timesteps=150 * 64, num_seeds=8), against="num_agents", threshold=0.9,
        ),
        Study(
            "critic-credit", "Credit-assignment game: the factored Q-critic against the MLP one, and PERLA against "
            "MAPPO and IPPO, over N",
            common=CREDIT, runs=over_agents((8, 32, 64), lambda n: {"num_agents": n}, CRITIC_ALGOS),
            paper=dict(total_timesteps=150 * 64, num_seeds=8), against="num_agents", threshold=0.9,
        ),
        Study(
            "value-norm-credit", "Credit-assignment game: value normalisation (MAPPO's ValueNorm) for each algorithm",
            common=CREDIT, runs=over_agents((32, 64), lambda n: {"num_agents": n}, VALUE_NORM_ALGOS),
            paper=dict(total_timesteps=150 * 64, num_seeds=8), against="num_agents", threshold=0.9,
        ),
        Study(
            "value-norm-mpe", "MPE simple_spread (3 agents): value normalisation (MAPPO's ValueNorm) for each algorithm",
            common=dict(env="mpe", time_limit="bootstrap"), runs=VALUE_NORM_ALGOS,
            paper=dict(total_timesteps=1_000_000, num_seeds=8),
        ),
        Study(  # value-norm-mpe's runs with value normalisation, paired against MAPPO with it
            "value-norm-mpe-on", "MPE simple_spread (3 agents), every algorithm with value normalisation",
            common=dict(env="mpe", time_limit="bootstrap"),
            runs={label: fields for label, fields in VALUE_NORM_ALGOS.items() if fields["value_norm"]},
            paper=dict(total_timesteps=1_000_000, num_seeds=8), baseline="mappo value norm",
        ),
        Study(
            "critic-credit-pairs", "Non-additive credit game (pairs score only together): the factored Q-critic over N",
            common=dict(CREDIT, env="credit_pairs"), runs=over_agents((8, 32), lambda n: {"num_agents": n},
                                                                      CRITIC_ALGOS),
            paper=dict(total_timesteps=150 * 64, num_seeds=8), against="num_agents", threshold=0.9,
        ),
        Study(
            "critic-settings-credit32", "Credit-assignment game, N = 32: the critic settings (learning rate and output "
            "scale for every algorithm; the factored critic's state path)",
            common=dict(CREDIT, env_kwargs={"num_agents": 32}),
            runs={"mappo": dict(algo="mappo"), "mappo legacy critic": dict(algo="mappo", **LEGACY_CRITIC),
                  "ippo": dict(algo="ippo"), "ippo legacy critic": dict(algo="ippo", **LEGACY_CRITIC),
                  "perla_mappo": dict(algo="perla_mappo"),
                  "perla_mappo state path": dict(algo="perla_mappo", critic_state_path=True),
                  "perla_mappo attention": dict(algo="perla_mappo", critic_pool="attention")},
            paper=dict(total_timesteps=150 * 64, num_seeds=8), threshold=0.9,
        ),
        Study(
            "critic-mpe", "MPE simple_spread (3 agents): today's critic defaults against those before the factored "
            "critic (critic lr 2.5e-4, output scale 1, MLP Q-critic with td)",
            common=dict(env="mpe", time_limit="bootstrap"), runs=CRITIC_DEFAULTS_MPE,
            paper=dict(total_timesteps=1_000_000, num_seeds=8),
        ),
        Study(
            "timelimit-mpe", "MPE simple_spread (3 agents): what the 26-step time limit means to the critics",
            common=dict(env="mpe"),
            runs={f"{name} {limit}": dict(fields, time_limit=limit) for limit in ("bootstrap", "terminal", "observe")
                  for name, fields in (("mappo", BASELINES["mappo"]), ("perla_mappo", BENCHMARK_ALGOS["perla_mappo"]))},
            paper=dict(total_timesteps=1_000_000, num_seeds=8), baseline="mappo bootstrap", jaxmarl_return=True,
        ),
        Study(
            "scaling-mpe", "MPE simple_spread: the number of agents N (as many landmarks)",
            common=dict(env="mpe", time_limit="observe"),
            runs=over_agents((3, 6, 9), lambda n: {"num_agents": n, "num_landmarks": n}),
            paper=dict(total_timesteps=2_000_000, num_seeds=8), against="num_agents", jaxmarl_return=True,
            cpu=dict(total_timesteps=200_704, num_seeds=8),  # 98 updates of 16 envs x 128 steps
        ),
        Study(
            "k-mpe6", "MPE simple_spread, 6 agents: K joint-action samples",
            common=dict(env="mpe", time_limit="observe", env_kwargs={"num_agents": 6, "num_landmarks": 6}),
            runs={"mappo": BASELINES["mappo"], **{label: fields for label, fields in K_FAMILIES.items()
                                                  if " td " in label}},
            paper=dict(total_timesteps=2_000_000, num_seeds=8), against="k", jaxmarl_return=True,
            cpu=dict(total_timesteps=100_352, num_seeds=8),  # 49 updates
        ),
        Study(  # scaling-mpe's settings at N = 9, so its mappo, ippo and K = 16 runs are shared
            "k-mpe9", "MPE simple_spread, 9 agents: PERLA-MAPPO's K from 1 to 64 (its default is 16)",
            common=dict(env="mpe", time_limit="observe", env_kwargs={"num_agents": 9, "num_landmarks": 9}),
            runs={"mappo": SCALING_ALGOS["mappo"], "ippo": SCALING_ALGOS["ippo"],
                  **{f"perla_mappo K={k}": dict(SCALING_ALGOS["perla_mappo"], k=k) for k in (1, 4, 16, 64)}},
            paper=dict(total_timesteps=2_000_000, num_seeds=8), against="k", jaxmarl_return=True,
            cpu=dict(total_timesteps=200_704, num_seeds=8),  # scaling-mpe's cpu budget
        ),
        *(Study(
            f"smax-{map_name}", f"SMAX {map_name} against the heuristic enemy, JaxMARL's mappo_homogenous_rnn_smax "
            "settings (--preset jaxmarl)",
            common=smax_jaxmarl(map_name), runs=BENCHMARK_ALGOS, score="win_rate", **SMAX_BUDGETS,
        ) for map_name in ("3m", "2s3z", "3s5z")),
        Study(  # smax-2s3z's settings and budgets, so its perla_mappo run (the td advantage) is shared
            "k-smax2s3z", "SMAX 2s3z: which part of PERLA-MAPPO's lead the K samples and the control variate carry "
            "(K = 1 and the td advantage against the defaults)",
            common=smax_jaxmarl("2s3z"), runs=PERLA_PARTS, baseline="perla_mappo", score="win_rate",
            **SMAX_BUDGETS,
        ),
        Study(  # smax-3m's settings and budgets, so its three runs without value normalisation are shared
            "value-norm-smax3m", "SMAX 3m: value normalisation (MAPPO's ValueNorm) for each algorithm at JaxMARL's "
            "SMAX settings",
            common=smax_jaxmarl("3m"), runs=VALUE_NORM_ALGOS, score="win_rate", **SMAX_BUDGETS,
        ),
        Study(  # smax-3m's settings and budgets, so its mappo run (time limit terminal) is shared
            "timelimit-smax3m", "SMAX 3m: the time limit at JaxMARL's SMAX settings (terminal is the preset's)",
            common=smax_jaxmarl("3m"), runs=MAPPO_TIME_LIMITS, baseline="mappo bootstrap", score="win_rate",
            **SMAX_BUDGETS,
        ),
        Study(
            "mabrax-ant4x2", "MABrax ant_4x2, JaxMARL's ippo_ff_mabrax settings (--preset jaxmarl)",
            common=MABRAX_ANT, runs=BENCHMARK_ALGOS, **MABRAX_BUDGETS,
        ),
        Study(  # mabrax-ant4x2's settings and budgets, so its mappo run (time limit terminal) is shared
            "timelimit-ant4x2", "MABrax ant_4x2: the time limit at JaxMARL's ippo_ff_mabrax settings (terminal is "
            "the preset's)",
            common=MABRAX_ANT, runs=MAPPO_TIME_LIMITS,
            baseline="mappo bootstrap", **MABRAX_BUDGETS,
        ),
        Study(
            "defaults-mpe", "MPE simple_spread (3 agents), default Config (JaxMARL ippo_ff_mpe's PPO settings)",
            common=dict(env="mpe", time_limit="bootstrap"), runs={**BASELINES, **PERLA_GRID},
            paper=dict(total_timesteps=1_000_000, num_seeds=8),
        ),
    )
}
