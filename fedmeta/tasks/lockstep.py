"""Lock-step vector envs for simulator-backed families (MuJoCo, classic control, toy text).

:class:`LockstepVectorEnv` owns a list of task envs *without* wrappers and steps them in a
plain loop: one batched policy forward per time step happens in the sampler, the envs only
receive their action row.  It applies the horizon itself (truncation at ``horizon`` steps)
and follows gymnasium's ``SAME_STEP`` autoreset contract (a finished env returns its reset
observation; the last one goes to ``info["final_obs"]``), the mode fedmeta uses everywhere.
Per-step ``info`` dicts of the envs are not merged: that merge is most of
``SyncVectorEnv``'s overhead on cheap MuJoCo steps, and the sampler reads only rewards.

With ``autoreset_mode=DISABLED`` (what :meth:`TaskFamily.make_vector_env` builds for the
sampler) an env whose episode has ended is *idle* until the next ``reset()``: it is not
stepped again and its row returns its last observation, reward 0 and no end flags.  The
sampler collects one whole episode per env per pass, so stepping a finished env (to throw the
steps away) would only burn simulator time; gymnasium's own DISABLED mode asserts instead.

Continuous actions are clipped to the action box before they reach the simulator (the
policy's Gaussian sample is unbounded; its log-probability uses the unclipped sample).

:class:`ProcessVectorEnv` is the many-core option (``client.sampler-workers``): ``workers``
processes, each owning a *group* of envs as a :class:`LockstepVectorEnv` (never one
process per env, which is IPC-bound for cheap steps), stepped in lock-step by the parent.
"""

from __future__ import annotations

import multiprocessing as mp
import weakref
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from fedmeta.tasks.base import TaskSpec


def _final_info(obs: np.ndarray, done: np.ndarray) -> dict[str, Any]:
    return {"final_obs": obs, "_final_obs": done} if done.any() else {}


def autoreset_settings(mode: gym.vector.AutoresetMode) -> tuple[dict[str, object], bool]:
    """A lock-step vector env's ``metadata`` and whether a finished env idles until the next reset
    (``DISABLED``); ``SAME_STEP`` resets it in the step that ended it; other modes are refused."""
    if mode not in (gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.DISABLED):
        raise ValueError(f"autoreset_mode {mode} is not supported; valid: SAME_STEP, DISABLED")
    return {"autoreset_mode": mode}, mode == gym.vector.AutoresetMode.DISABLED


class LockstepVectorEnv(gym.vector.VectorEnv):
    """``len(envs)`` envs of one task stepped in lock-step in this process."""

    def __init__(self, envs: list[gym.Env], horizon: int,
                 autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.SAME_STEP) -> None:
        if not envs:
            raise ValueError("LockstepVectorEnv needs at least one env")
        self.metadata, self._idle_when_done = autoreset_settings(autoreset_mode)
        self.envs = envs
        self._steps = [env.step for env in envs]
        self.num_envs = len(envs)
        self.horizon = horizon
        self.single_observation_space = envs[0].observation_space
        self.single_action_space = envs[0].action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._discrete = isinstance(self.single_action_space, gym.spaces.Discrete)
        if isinstance(self.single_action_space, gym.spaces.Box):
            self._low, self._high = self.single_action_space.low, self.single_action_space.high
        self._obs = np.zeros((self.num_envs, *self.single_observation_space.shape), dtype=np.float32)
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._active = np.ones(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        else:
            seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
        for i, env in enumerate(self.envs):
            self._obs[i] = env.reset(seed=seeds[i])[0]
        self._t[:] = 0
        self._active[:] = True
        return self._obs.copy(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        if self._discrete:
            rows: list[Any] = actions.astype(np.int64).tolist()
        else:
            rows = list(np.clip(actions, self._low, self._high).astype(np.float64))
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        obs, active = self._obs, self._active
        # one list comprehension over bound step methods: about half the cost of an indexed loop
        if self._idle_when_done and not active.all():
            ids: Any = np.flatnonzero(active).tolist()
            results = [self._steps[i](rows[i]) for i in ids]
        else:
            ids = slice(None)
            results = [step(row) for step, row in zip(self._steps, rows)]
        if results:
            o, r, te, tr, _ = zip(*results)
            obs[ids], rewards[ids], terminated[ids], truncated[ids] = o, r, te, tr
        self._t += active
        truncated |= (self._t >= self.horizon) & ~terminated & active
        done = terminated | truncated
        if self._idle_when_done:
            active &= ~done
            return obs.copy(), rewards, terminated, truncated, {}
        info = _final_info(obs.copy(), done)
        for i in np.flatnonzero(done):
            obs[i] = self.envs[i].reset()[0]
            self._t[i] = 0
        return obs.copy(), rewards, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


# ------------------------------------------------------------------ worker processes
def _worker(conn: Connection, spec_json: str, num_envs: int, autoreset_mode: gym.vector.AutoresetMode) -> None:
    """Own ``num_envs`` envs of the task and answer reset/step/close commands."""
    from fedmeta.tasks import TASK_FAMILIES, TaskSpec

    spec = TaskSpec.from_json(spec_json)
    family = TASK_FAMILIES.get(spec.family)
    venv = LockstepVectorEnv([family.make_task_env(spec) for _ in range(num_envs)], spec.horizon, autoreset_mode)
    try:
        while True:
            cmd, payload = conn.recv()
            if cmd == "step":
                conn.send(venv.step(payload))
            elif cmd == "reset":
                conn.send(venv.reset(seed=payload))
            else:
                break
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        venv.close()
        conn.close()


def _shutdown(conns: list[Connection], procs: list[Any]) -> None:
    for conn in conns:
        try:
            conn.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    for conn in conns:
        conn.close()


class ProcessVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` envs of ``spec`` split over ``workers`` processes (contiguous groups).

    Same semantics and, for the same seeds, the same batches as :class:`LockstepVectorEnv`.
    Workers are spawned (safe inside threads and Ray actors) and always ended by ``close``,
    by garbage collection, or at interpreter exit.
    """

    def __init__(self, spec: TaskSpec, num_envs: int, workers: int,
                 autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.SAME_STEP) -> None:
        from fedmeta.tasks import TASK_FAMILIES

        self.metadata = {"autoreset_mode": autoreset_mode}
        workers = max(1, min(workers, num_envs))
        probe = TASK_FAMILIES.get(spec.family).make_task_env(spec)
        self.single_observation_space, self.single_action_space = probe.observation_space, probe.action_space
        probe.close()
        self.num_envs = num_envs
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._bounds = np.cumsum([0] + [len(g) for g in np.array_split(np.arange(num_envs), workers)])
        ctx = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for w in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, spec.to_json(), int(self._bounds[w + 1] - self._bounds[w]), autoreset_mode),
                               daemon=True, name=f"fedmeta-sampler-{w}")
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._finalizer = weakref.finalize(self, _shutdown, self._conns, self._procs)

    @property
    def worker_pids(self) -> list[int]:
        return [int(p.pid) for p in self._procs]

    def _slices(self) -> list[slice]:
        return [slice(int(a), int(b)) for a, b in zip(self._bounds[:-1], self._bounds[1:])]

    def _gather(self) -> list[Any]:
        try:
            return [conn.recv() for conn in self._conns]
        except EOFError as exc:
            raise RuntimeError("a fedmeta sampler worker process died") from exc

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        if isinstance(seed, int):
            seed = [seed + i for i in range(self.num_envs)]
        for conn, cols in zip(self._conns, self._slices()):
            conn.send(("reset", None if seed is None else list(seed[cols])))
        return np.concatenate([obs for obs, _ in self._gather()]), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        for conn, cols in zip(self._conns, self._slices()):
            conn.send(("step", actions[cols]))
        parts = self._gather()
        obs, rewards, terminated, truncated = (np.concatenate([p[k] for p in parts]) for k in range(4))
        done = terminated | truncated
        final = obs.copy()
        for cols, part in zip(self._slices(), parts):
            if "final_obs" in part[4]:
                final[cols] = part[4]["final_obs"]
        return obs, rewards, terminated, truncated, _final_info(final, done)

    def close_extras(self, **kwargs: Any) -> None:
        self._finalizer()
