"""Episode boundaries and masks of the fixed-horizon sampler."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import torch

from fedmeta.policies import make_policy
from fedmeta.rollouts import collect_episodes
from fedmeta.tasks import TaskSpec
from fedmeta.tasks.grid_nav import GRID_NAV
from fedmeta.tasks.lockstep import LockstepVectorEnv, ProcessVectorEnv
from fedmeta.tasks.point_nav import POINT_NAV


class _Straight(torch.nn.Module):
    """Deterministic policy moving +0.1 in x: reaches a goal at (0.3, 0) in 3 steps."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    noise_shape = (2,)

    def act(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(obs)
        out[:, 0] = 0.1
        return out


def test_termination_masks_later_steps_and_no_reward_leaks():
    spec = TaskSpec("point-nav", {"goal": [0.3, 0.0]}, horizon=6)
    venv = POINT_NAV.make_vector_env(spec, 2)
    batch = collect_episodes(_Straight(), venv, 3, spec.horizon, seed=0)  # 2 passes, 3 kept
    assert batch.obs.shape == (6, 3, 2) and batch.masks.shape == (6, 3)
    np.testing.assert_array_equal(batch.masks[:, 0].numpy(), [1, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(batch.rewards[:, 0].numpy(), [-0.2, -0.1, 0.0, 0, 0, 0], atol=1e-6)
    assert batch.num_steps == 9
    # the observation at t is the state before the step (start at the origin)
    np.testing.assert_allclose(batch.obs[:3, 0, 0].numpy(), [0.0, 0.1, 0.2], atol=1e-6)


def test_truncation_at_horizon_without_termination():
    spec = TaskSpec("point-nav", {"goal": [0.45, 0.45], "option:terminate-at-goal": False}, horizon=4)
    venv = POINT_NAV.make_vector_env(spec, 3)
    batch = collect_episodes(_Straight(), venv, 3, spec.horizon, seed=0)
    assert batch.masks.sum().item() == 12


def _lockstep(family, spec: TaskSpec, n: int) -> LockstepVectorEnv:
    return LockstepVectorEnv([family.make_task_env(spec) for _ in range(n)], spec.horizon)


def test_lockstep_env_gives_the_batched_envs_episodes_with_terminations():
    """The generic lock-step path (simulator families) and the numpy batch agree exactly."""
    spec = TaskSpec("point-nav", {"goal": [0.3, 0.0]}, horizon=6)
    batched = collect_episodes(_Straight(), POINT_NAV.make_vector_env(spec, 2), 3, spec.horizon, seed=0)
    lockstep = collect_episodes(_Straight(), _lockstep(POINT_NAV, spec, 2), 3, spec.horizon, seed=0)
    for x, y in zip(batched, lockstep):
        torch.testing.assert_close(x, y)
    np.testing.assert_array_equal(lockstep.masks[:, 0].numpy(), [1, 1, 1, 0, 0, 0])


def test_lockstep_env_truncates_at_horizon_and_autoresets_same_step():
    spec = TaskSpec("grid-nav", {"goal": [0, 0]}, horizon=3)
    venv = _lockstep(GRID_NAV, spec, 2)
    start, _ = venv.reset(seed=[1, 2])
    for t in range(3):
        obs, reward, terminated, truncated, info = venv.step(np.array([1, 2]))
    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].all()
    # the final observation is the state after the third "up"/"down" move, the returned one a fresh start
    half = GRID_NAV.make_task_env(spec).half
    np.testing.assert_allclose(info["final_obs"][:, 1] * half, np.clip(start[:, 1] * half + [3, -3], -half, half))
    assert (venv._t == 0).all()  # both envs restarted in the same step


def test_worker_processes_reproduce_the_in_process_batch_and_end():
    spec = GRID_NAV.sample(1, np.random.default_rng(0), horizon=12)[0]
    policy = make_policy(GRID_NAV.make_task_env(spec).observation_space, GRID_NAV.make_task_env(spec).action_space, seed=0)
    local = collect_episodes(policy, _lockstep(GRID_NAV, spec, 5), 7, spec.horizon, seed=3)
    venv = ProcessVectorEnv(spec, 5, workers=2)
    pids = venv.worker_pids
    try:
        remote = collect_episodes(policy, venv, 7, spec.horizon, seed=3)
    finally:
        venv.close()
    for x, y in zip(local, remote):
        torch.testing.assert_close(x, y)
    for pid in pids:
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie has ended
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_episodes_do_not_depend_on_how_they_are_batched():
    spec = GRID_NAV.sample(1, np.random.default_rng(0), horizon=10)[0]
    env = GRID_NAV.make_task_env(spec)
    policy = make_policy(env.observation_space, env.action_space, seed=0)
    few = collect_episodes(policy, _lockstep(GRID_NAV, spec, 2), 5, spec.horizon, seed=4)  # 3 passes
    many = collect_episodes(policy, GRID_NAV.make_vector_env(spec, 7), 5, spec.horizon, seed=4)  # 1 pass
    for x, y in zip(few, many):
        torch.testing.assert_close(x, y)


def test_softmax_policy_samples_by_inverse_cdf():
    env = GRID_NAV.make_task_env(GRID_NAV.sample(1, np.random.default_rng(0))[0])
    policy = make_policy(env.observation_space, env.action_space, seed=1)
    obs = torch.zeros((10_000, 2))
    u = (torch.arange(10_000, dtype=torch.float32) + 0.5) / 10_000  # evenly spread quantiles
    with torch.no_grad():
        counts = torch.bincount(policy.act(obs, u), minlength=5).double() / 10_000
        probs = policy(obs[:1]).probs[0].double()
    torch.testing.assert_close(counts, probs, atol=2e-4, rtol=0)


def test_numpy_actor_matches_the_torch_policy_and_follows_updates():
    """CPU sampling acts in numpy; it must be the same policy, including after optimizer steps."""
    rng = np.random.default_rng(0)
    for obs_space, act_space in [(gym.spaces.Box(-1, 1, (5,)), gym.spaces.Discrete(4)),
                                 (gym.spaces.Box(-1, 1, (5,)), gym.spaces.Box(-1, 1, (3,)))]:
        policy = make_policy(obs_space, act_space, activation="relu", seed=2)
        actor = policy.numpy_actor()
        with torch.no_grad():
            for p in policy.parameters():  # an in-place update, as an optimizer step does
                p.add_(0.1)
        obs = rng.standard_normal((500, 5)).astype(np.float32)
        noise = (rng.random((500,)) if not policy.noise_shape else rng.standard_normal((500, 3))).astype(np.float32)
        with torch.no_grad():
            expected = policy.act(torch.from_numpy(obs), torch.from_numpy(noise)).numpy()
        got = actor(obs, noise)
        if policy.noise_shape:
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        else:
            assert (got == expected).mean() > 0.99
