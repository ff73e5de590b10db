"""Standalone check for the XLA:CPU hang behind the `jax<0.10` pin in pyproject.toml.

Reproduces: a small IPPO-style PPO trainer (orthogonally initialised feed-forward actor-critic, jaxmarl
MPE_simple_spread_v3, scanned rollout, GAE, minibatch epochs, all in lax.scan) run as jit(vmap(train))
over 8 seeds stops for good (all threads idle) on a 2-core CPU under jax 0.10.x; one seed runs. Needs only
jax, jaxmarl, optax, flax, distrax (not perla_jax); training runs in a child killed after --timeout s.

Run:  python experiments/jax_hang_check.py [--seeds 8] [--timeout 300] [--updates 4]
          [--xla-flags="--xla_cpu_multi_thread_eigen=false"] [--no-async-dispatch]
Prints one line; exit code 0 = completed, 1 = hung (killed), 2 = child crashed.

Measured 2026-11-26, 2-core AMD EPYC CPU, jaxmarl 0.2.0, default --updates 4 (times: jit+run):
  jax/jaxlib 0.9.2:  --seeds 1 completed (12 s); --seeds 8 completed (21 s).
  jax/jaxlib 0.10.2: --seeds 1 completed (13 s); --seeds 8 HUNG at --timeout 240, also with XLA_FLAGS
    --xla_cpu_multi_thread_eigen=false or --xla_force_host_platform_device_count=1, and with
    --no-async-dispatch. A race: plain 8-seed runs hung 12 of 13 times. `taskset -c 0`: 5 of 5 completed.
Cause (gdb): both XLA:CPU intra-op workers block in lapack_sgeqrf_ffi / lapack_sorgqr_ffi (the QR of
the orthogonal initialiser, batched by vmap) -> jax::ParallelBatchMap -> BlockingCounter::Wait: jaxlib
0.10 fans a batched LAPACK call out to the pool running it and waits, so pool-size such calls at once
wait forever. Batch 1 or a 1-thread pool runs inline. jax commit 859992407d (2026-07-21, "Don't try
to parallelize LAPACK kernels in opensource builds") removes this; jax 0.11.0 (2026-07-16) lacks it.
"""
import argparse
import os
import subprocess
import sys
import time
from importlib.metadata import version

NUM_ENVS, NUM_STEPS, EPOCHS, MINIBATCHES = 16, 32, 2, 2
GAMMA, LAM, CLIP, ENT_COEF, VF_COEF, LR = 0.99, 0.95, 0.2, 0.01, 0.5, 2.5e-4


def make_net(n_act):
    import distrax
    import flax.linen as nn
    dense = lambda n, s: nn.Dense(n, kernel_init=nn.initializers.orthogonal(s))  # QR -> LAPACK

    class ActorCritic(nn.Module):
        @nn.compact
        def __call__(self, x):
            pi = nn.tanh(dense(64, 2**0.5)(nn.tanh(dense(64, 2**0.5)(x))))
            v = nn.tanh(dense(64, 2**0.5)(nn.tanh(dense(64, 2**0.5)(x))))
            return distrax.Categorical(logits=dense(n_act, 0.01)(pi)), dense(1, 1.0)(v)[..., 0]
    return ActorCritic()


def gae(values, rewards, dones, last_value):
    import jax
    import jax.numpy as jnp
    def back(carry, t):
        adv, next_v = carry
        v, r, d = t
        adv = r + GAMMA * next_v * (1 - d) - v + GAMMA * LAM * (1 - d) * adv
        return (adv, v), adv
    _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value),
                          (values, rewards, dones), reverse=True)
    return adv, adv + values


def make_epoch(net, tx, batch_size):
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(params, mb):
        obs, action, old_logp, old_v, adv, target = mb
        dist, value = net.apply(params, obs)
        ratio = jnp.exp(dist.log_prob(action) - old_logp)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - CLIP, 1 + CLIP) * adv).mean()
        v_clip = old_v + jnp.clip(value - old_v, -CLIP, CLIP)
        vf = 0.5 * jnp.maximum((value - target) ** 2, (v_clip - target) ** 2).mean()
        return pg + VF_COEF * vf - ENT_COEF * dist.entropy().mean()

    def minibatch(state, mb):
        loss, grads = jax.value_and_grad(loss_fn)(state[0], mb)
        updates, opt_state = tx.update(grads, state[1])
        return (optax.apply_updates(state[0], updates), opt_state), loss

    def epoch(carry, _):
        params, opt_state, data, key = carry
        key, k_perm = jax.random.split(key)
        perm = jax.random.permutation(k_perm, batch_size)
        mbs = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:])[perm].reshape(
            (MINIBATCHES, -1) + x.shape[2:]), data)
        (params, opt_state), losses = jax.lax.scan(minibatch, (params, opt_state), mbs)
        return (params, opt_state, data, key), losses.mean()
    return epoch


def make_train(num_updates):
    import jax
    import jax.numpy as jnp
    import jaxmarl
    import optax
    env = jaxmarl.make("MPE_simple_spread_v3")
    agents = env.agents
    net, tx = make_net(env.action_space(agents[0]).n), optax.chain(
        optax.clip_by_global_norm(0.5), optax.adam(LR))
    epoch = make_epoch(net, tx, NUM_STEPS * NUM_ENVS * len(agents))
    flat = lambda d: jnp.concatenate([d[a] for a in agents])  # {agent: (E, ...)} -> (A*E, ...)
    unflat = lambda x: {a: x[i * NUM_ENVS:(i + 1) * NUM_ENVS] for i, a in enumerate(agents)}

    def env_step(carry, _):
        params, env_state, obs, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        dist, value = net.apply(params, obs)
        action = dist.sample(seed=k_act)
        obs2, env_state, rew, done, _ = jax.vmap(env.step)(
            jax.random.split(k_env, NUM_ENVS), env_state, unflat(action))
        batch = (obs, action, dist.log_prob(action), value, flat(rew), flat(done).astype(jnp.float32))
        return (params, env_state, flat(obs2), key), batch

    def update(carry, _):
        params, opt_state, env_state, obs, key = carry
        (params, env_state, obs, key), batch = jax.lax.scan(
            env_step, (params, env_state, obs, key), None, NUM_STEPS)
        adv, target = gae(*batch[3:], net.apply(params, obs)[1])
        (params, opt_state, _, key), loss = jax.lax.scan(
            epoch, (params, opt_state, batch[:4] + (adv, target), key), None, EPOCHS)
        return (params, opt_state, env_state, obs, key), (loss.mean(), batch[4].mean())

    def train(key):
        key, k_net, k_env = jax.random.split(key, 3)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, NUM_ENVS))
        params = net.init(k_net, flat(obs))
        carry = (params, tx.init(params), env_state, flat(obs), key)
        return jax.lax.scan(update, carry, None, num_updates)[1]
    return train


def child(args):
    import jax
    if args.no_async_dispatch:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    train = make_train(args.updates)
    keys = jax.random.split(jax.random.PRNGKey(0), args.seeds)
    t0 = time.perf_counter()
    _, reward = jax.block_until_ready(jax.jit(jax.vmap(train))(keys))
    print(f"RESULT {time.perf_counter() - t0:.1f} reward={float(reward[:, -1].mean()):.3f}")


def parent(args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--seeds", str(args.seeds),
           "--updates", str(args.updates)] + (["--no-async-dispatch"] if args.no_async_dispatch else [])
    env = dict(os.environ, **({"XLA_FLAGS": args.xla_flags} if args.xla_flags is not None else {}))
    head = (f"jax {version('jax')} jaxlib {version('jaxlib')} | seeds={args.seeds} updates={args.updates}"
            f" XLA_FLAGS={env.get('XLA_FLAGS', '')!r} async_dispatch={not args.no_async_dispatch}")
    t0 = time.perf_counter()
    try:  # capture_output drains both pipes; on timeout run() kills the child and reaps it
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        print(f"{head} | HUNG: no result within {args.timeout:g} s (killed)")
        return 1
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"{head} | ERROR: child rc={proc.returncode}: {proc.stderr.strip()[-400:]}")
        return 2
    wall = time.perf_counter() - t0
    print(f"{head} | completed in {lines[-1].split()[1]} s (jit+run; child wall {wall:.1f} s)")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--xla-flags", default=None, help="XLA_FLAGS value for the child")
    p.add_argument("--no-async-dispatch", action="store_true",
                   help="jax.config.update('jax_cpu_enable_async_dispatch', False) in the child")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    sys.exit(child(a) if a.child else parent(a))
