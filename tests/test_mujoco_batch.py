"""The batched MuJoCo backend (fedmeta.tasks.mujoco_batch) against the reference gymnasium env classes.

Real MuJoCo, no mocks.  Tolerances: observations are compared as the float32 the vector env
returns (the reference's float64 cast to float32) with rtol = atol = 1e-6; rewards in float64 with
rtol = atol = 1e-9; termination flags exactly.  (mujoco.batch is documented as bit-identical to a
loop over MjData, and the kernels repeat the reference's float operations in order, so in practice
the differences are 0; the tolerances only allow numpy reduction order to differ.)
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from fedmeta.config import ExperimentConfig
from fedmeta.policies import make_policy
from fedmeta.rollouts import collect_episodes
from fedmeta.tasks import TASK_FAMILIES, TaskSpec, task_split
from fedmeta.tasks.lockstep import LockstepVectorEnv
from fedmeta.tasks.mujoco_batch import MujocoBatchVectorEnv, make_batch_vector_env
from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of

pytestmark = pytest.mark.mujoco

OBS_TOL = {"rtol": 1e-6, "atol": 1e-6}
REWARD_TOL = {"rtol": 1e-9, "atol": 1e-9}
SAME_STEP = gym.vector.AutoresetMode.SAME_STEP

# (family, task.compat option): every observation layout and reward variant of the four families
CASES = [
    ("half-cheetah-dir", "gymnasium"), ("half-cheetah-vel", "pytorch-maml-rl"),  # 17-D and 20-D (torso com)
    ("ant-dir", "promp"), ("ant-vel", "gymnasium"), ("ant-vel", "pytorch-maml-rl"),  # 111-, 105-, 125-D
    ("swimmer-vel", "gymnasium"), ("swimmer-vel", "promp+sign-bug"), ("walker-params", "gymnasium"),
    ("walker-params", "pearl"),
]


def _specs(family: str, compat: str, n: int) -> list[TaskSpec]:
    """``n`` different tasks of the family (walker-params: n different physics); ``compat+flag``
    also sets the boolean family option ``task.<flag>``."""
    compat, *flags = compat.split("+")
    options = {"compat": compat, **{flag: True for flag in flags}}
    return task_split(family, n, 0, seed=3, horizon=1000, options=options)[0]


def _actions(steps: int, n: int, dim: int, seed: int) -> np.ndarray:
    """Random actions, partly outside the box [-1, 1] so that clipping is exercised too."""
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=(steps, n, dim))


@pytest.mark.parametrize(("family", "compat"), CASES)
def test_batch_matches_reference_envs(family, compat):
    """Simulation i of one batch, holding n different tasks, reproduces reference env i step by step,
    through terminations and autoresets (the reference resets from its own generator, unseeded)."""
    fam, n, steps = TASK_FAMILIES.get(family), 3, 60
    specs = _specs(family, compat, n)
    if family == "walker-params":  # the physics really differs between the simulations
        assert len({tuple(s.params["body-mass-multipliers"]) for s in specs}) == n
    refs = [fam.make_task_env(spec) for spec in specs]
    venv = make_batch_vector_env(fam, specs, horizon=1000, autoreset_mode=SAME_STEP)
    seeds = [11, 12, 13]
    obs, _ = venv.reset(seed=seeds)
    ref_obs = np.stack([env.reset(seed=s)[0] for env, s in zip(refs, seeds)])
    np.testing.assert_allclose(obs, ref_obs.astype(np.float32), **OBS_TOL)
    low, high = venv.single_action_space.low, venv.single_action_space.high
    terminations = 0
    for t, action in enumerate(_actions(steps, n, venv.single_action_space.shape[0], seed=5)):
        obs, reward, terminated, truncated, info = venv.step(action)
        for i, env in enumerate(refs):
            o, r, te, _, _ = env.step(np.clip(action[i], low, high))
            final = info["final_obs"][i] if terminated[i] else obs[i]
            np.testing.assert_allclose(final, o.astype(np.float32), **OBS_TOL, err_msg=f"obs, step {t}, sim {i}")
            np.testing.assert_allclose(reward[i], r, **REWARD_TOL, err_msg=f"reward, step {t}, sim {i}")
            assert terminated[i] == te, f"terminated, step {t}, sim {i}"
            if te:
                terminations += 1
                np.testing.assert_allclose(obs[i], env.reset()[0].astype(np.float32), **OBS_TOL)
        assert not truncated.any()
    if family == "walker-params":  # random actions topple the walker: the autoreset path ran
        assert terminations > 0
    venv.close()


def test_batch_respects_horizon_and_idles_finished_envs():
    """DISABLED autoreset: an env that finished is not stepped again (state frozen, reward 0)."""
    fam = TASK_FAMILIES.get("walker-params")
    spec = _specs("walker-params", "gymnasium", 1)[0]
    venv = fam.make_vector_env(TaskSpec(spec.family, spec.params, 7, 0), 4)
    assert isinstance(venv, MujocoBatchVectorEnv)
    venv.reset(seed=0)
    ended = np.zeros(4, dtype=bool)
    for t in range(7):
        before = venv.sim.qpos.copy()
        obs, reward, terminated, truncated, _ = venv.step(np.ones((4, 6)) * (t % 2 * 2 - 1))
        assert (reward[ended] == 0).all() and np.array_equal(venv.sim.qpos[ended], before[ended])
        ended |= terminated | truncated
    assert ended.all()
    venv.close()


@pytest.mark.parametrize("family", ["half-cheetah-vel", "ant-dir", "swimmer-vel", "walker-params"])
def test_sampler_same_seed_is_deterministic(family):
    """Two batched sampler runs with one seed give identical batches (also on 2 threads), and the
    batched backend is the default of the sampler's vector env; the gymnasium backend is selectable."""
    fam = TASK_FAMILIES.get(family)
    spec = task_split(family, 1, 0, seed=0, horizon=30)[0][0]
    venvs = [fam.make_vector_env(spec, 4), fam.make_vector_env(spec, 4, threads=2)]
    assert all(isinstance(v, MujocoBatchVectorEnv) for v in venvs)
    policy = make_policy(venvs[0].single_observation_space, venvs[0].single_action_space, seed=0)
    first, again, threaded = (collect_episodes(policy, v, 6, 30, seed=9) for v in (venvs[0], venvs[0], venvs[1]))
    for other in (again, threaded):
        for a, b in zip(first, other):
            assert np.array_equal(a.numpy(), b.numpy())
    reference = fam.make_vector_env(spec, 4, backend="gymnasium")
    assert isinstance(reference, LockstepVectorEnv)
    ref = collect_episodes(policy, reference, 6, 30, seed=9)  # same streams: same episodes (tolerance above)
    np.testing.assert_allclose(first.obs.numpy(), ref.obs.numpy(), **OBS_TOL)
    np.testing.assert_allclose(first.rewards.numpy(), ref.rewards.numpy(), rtol=1e-5, atol=1e-5)  # float32 buffer
    assert np.array_equal(first.masks.numpy(), ref.masks.numpy())
    for v in (*venvs, reference):
        v.close()


def test_unknown_backend_is_rejected():
    fam = TASK_FAMILIES.get("swimmer-vel")
    spec = task_split("swimmer-vel", 1, 0, seed=0)[0][0]
    with pytest.raises(ValueError, match="backend='mjx' is invalid; choose from batch, gymnasium"):
        fam.make_vector_env(spec, 2, backend="mjx")


@pytest.mark.parametrize(("backend", "threads", "kind"), [("batch", 2, MujocoBatchVectorEnv),
                                                          ("gymnasium", 1, LockstepVectorEnv)])
def test_client_config_chooses_the_backend(backend, threads, kind):
    """``client.mujoco-backend`` and ``client.num-threads`` reach a client's vector env."""
    cfg = ExperimentConfig.from_flat({"task.family": "swimmer-vel", "task.horizon": 10,
                                      "client.mujoco-backend": backend, "client.num-threads": threads})
    with TaskWorker(cfg, tasks_of(cfg)[0][0], torch.device("cpu")) as worker:
        assert isinstance(worker.venv, kind)
        if kind is MujocoBatchVectorEnv:
            assert worker.venv.batch.nthread == threads


def test_one_batch_needs_one_layout():
    """Tasks may differ within a batch, observation layouts may not (20-D vs 17-D HalfCheetah)."""
    fam = TASK_FAMILIES.get("half-cheetah-vel")
    specs = [_specs("half-cheetah-vel", "gymnasium", 1)[0], _specs("half-cheetah-vel", "pearl", 1)[0]]
    with pytest.raises(ValueError, match="must share model sizes"):
        make_batch_vector_env(fam, specs, horizon=10)


def test_a_local_round_is_the_same_on_both_backends():
    """A client's training round (sampling, inner steps, metrics) on walker-params gives the same
    update whichever backend steps the physics (the backends agree step by step, tests above)."""
    flat = {"task.family": "walker-params", "task.horizon": 15, "solver.episodes-per-step": 4, "prox.inner-steps": 2,
            "seed": 1}
    results = []
    for backend in ("batch", "gymnasium"):
        cfg = ExperimentConfig.from_flat({**flat, "client.mujoco-backend": backend})
        with TaskWorker(cfg, tasks_of(cfg)[0][0], torch.device("cpu")) as worker:
            results.append(worker.train_round(initial_meta_policy(cfg), None, server_round=1))
    (aux_a, personal_a, metrics_a, _), (aux_b, personal_b, metrics_b, _) = results
    for k in aux_a:
        np.testing.assert_allclose(aux_a[k], aux_b[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(personal_a[k], personal_b[k], rtol=1e-5, atol=1e-6)
    assert metrics_a["num-env-steps"] == metrics_b["num-env-steps"]
