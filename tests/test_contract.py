"""What may leave a client: the outbound contract mod rejects anything but arrays and scalars."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from clients.client_app import app
from clients.contract import contract_mod, contract_violation


@pytest.fixture(autouse=True)
def _identity(task_identity):
    """Every test here builds Flower messages."""


def _reply(content: RecordDict) -> Message:
    request = Message(RecordDict(), dst_node_id=2, message_type="train")
    return Message(content, reply_to=request)


def test_arrays_and_scalar_metrics_pass():
    content = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(3, np.float32))}), "metrics": MetricRecord({"a": 1.0, "n": 3})})
    assert contract_violation(_reply(content)) is None


@pytest.mark.parametrize(
    "content",
    [
        RecordDict({"observations": ArrayRecord({"obs": Array(np.zeros((10, 2), np.float32))}), "metrics": MetricRecord({"a": 1.0})}),
        RecordDict({"arrays": ArrayRecord({"actions": Array(np.zeros(10, np.int64))}), "metrics": MetricRecord({"a": 1.0})}),
        RecordDict({"metrics": MetricRecord({"rewards": [1.0, 2.0, 3.0]})}),
        RecordDict({"metrics": MetricRecord({"a": 1.0}), "config": ConfigRecord({"traj": b"raw"})}),
    ],
)
def test_trajectory_data_cannot_leave(content):
    assert contract_violation(_reply(content)) is not None


def test_the_client_app_enforces_the_contract_on_every_handler():
    assert contract_mod in app._mods


def test_a_bomrl_train_reply_is_the_shared_models_hypergradient_and_scalars():
    """BO-MRL uploads ∇_φJ_τ with the meta-policy's keys and shapes; Q-tables, batches and θ' stay local."""
    import torch

    from fedmeta.config import ExperimentConfig
    from fedmeta.records import arrays_to_record, metrics_to_record
    from fedmeta.worker import TaskWorker, initial_meta_policy, tasks_of

    cfg = ExperimentConfig.from_flat({"algorithm": "bomrl", "task.family": "frozen-lake-holes", "policy.hidden-sizes": "",
                                      "task.num-clients": 2, "solver.episodes-per-step": 4})
    meta = initial_meta_policy(cfg)
    upload, _, metrics, _ = TaskWorker(cfg, tasks_of(cfg)[0][0], torch.device("cpu")).train_round(meta, None, 1)
    assert {k: v.shape for k, v in upload.items()} == {k: v.shape for k, v in meta.items()}
    content = RecordDict({"arrays": arrays_to_record(upload), "metrics": metrics_to_record(metrics)})
    assert contract_violation(_reply(content)) is None


# ---------------------------------------------------------------- pMeta-RL with DQN: private state
DQN_SMALL = ("pmeta-cartpole", "task.num-clients=2 fed.clients-per-round=2 policy.hidden-sizes='16' prox.local-rounds=15 "
                                "dqn.replay-size=40 dqn.learning-starts=16 dqn.batch-size=8 dqn.target-update=5")
SAC_SMALL = ("pmeta-cheetah-vel", "task.num-clients=2 task.num-test-tasks=0 fed.clients-per-round=2 task.horizon=20 "
                                  "policy.hidden-sizes='16' prox.local-rounds=30 sac.replay-size=40 sac.learning-starts=16 "
                                  "sac.batch-size=8")


class _DqnNode:
    """Task 0 of a small pMeta-RL run (DQN, or SAC with ``small=SAC_SMALL``) on one in-process ClientApp
    (as the runtime calls it), state on disk (or, with ``state_dir`` None, in ``context.state`` only)."""

    def __init__(self, state_dir, algorithm: str = "pmeta", small: tuple[str, str] = DQN_SMALL, extra: str = "") -> None:
        from flwr.app import Context

        from clients.client_app import make_app
        from fedmeta.cli import resolve

        disk = f"client.state-dir='{state_dir}' " if state_dir is not None else ""  # None: context.state only
        self.cfg, flat, _ = resolve(small[0], [f"algorithm='{algorithm}' {disk}{small[1]} {extra}"])
        self.context = Context(run_id=5, node_id=7, node_config={"partition-id": 0}, state=RecordDict(),
                               run_config=flat)
        self.app = make_app()

    def train(self, server_round: int) -> Message:
        from fedmeta.records import arrays_to_record
        from fedmeta.worker import initial_meta_policy

        content = RecordDict({"arrays": arrays_to_record(initial_meta_policy(self.cfg)),
                              "config": ConfigRecord({"server-round": server_round})})
        reply = self.app(Message(content, dst_node_id=7, message_type="train"), self.context)
        assert not reply.has_error(), reply.error
        return reply

    def private(self) -> tuple[dict, dict]:
        from clients.state import ClientState
        from fedmeta.worker import _load_bytes

        state = ClientState.load(self.context)
        assert state.optimizer is not None and state.personal is not None
        return _load_bytes(state.optimizer)

    def personal(self) -> dict:
        from clients.state import ClientState

        return ClientState.load(self.context).personal  # type: ignore[return-value]


def test_dqn_replay_target_and_optimizer_persist_across_rounds_and_never_leave(tmp_path):
    from fedmeta.results import client_state_path
    from fedmeta.worker import initial_meta_policy

    node = _DqnNode(tmp_path)
    policy_shapes = {k: v.shape for k, v in initial_meta_policy(node.cfg).items()}
    replies = [node.train(1)]
    optimizers, solver = node.private()
    first = replies[0].content["metrics"]
    assert solver["env_steps"] == first["num-env-steps"] and solver["grad_steps"] == first["inner-steps"] > 0
    assert solver["replay"]["size"] == min(40, first["num-env-steps"])  # bounded by dqn.replay-size
    assert int(optimizers["personal"]["state"][0]["step"]) == first["inner-steps"]
    target_1 = {k: v.clone() for k, v in solver["target"].items()}

    replies.append(node.train(2))
    optimizers, solver = node.private()
    second = replies[1].content["metrics"]
    # the counters, the Adam moments and the (full, bounded) buffer carried over from round 1
    assert solver["env_steps"] == first["num-env-steps"] + second["num-env-steps"]
    assert solver["grad_steps"] == first["inner-steps"] + second["inner-steps"]
    assert int(optimizers["personal"]["state"][0]["step"]) == solver["grad_steps"]
    assert solver["replay"]["size"] == 40
    assert any(not torch_equal(target_1[k], solver["target"][k]) for k in target_1)  # target copies happened
    assert client_state_path(tmp_path, 5, 0).is_file()  # kept on the node's disk (client.state-dir)

    for reply in replies:  # what left the client: w_i's arrays (the Q-network's shapes) and scalars, nothing else
        assert contract_violation(reply) is None
        assert set(reply.content.array_records) == {"arrays"} and not reply.content.config_records
        assert {k: tuple(a.shape) for k, a in reply.content["arrays"].items()} == policy_shapes
        assert all(isinstance(v, (int, float)) for v in reply.content["metrics"].values())


@pytest.mark.parametrize("small,algorithm,on_disk,extra", [
    (DQN_SMALL, "independent", True, ""), (DQN_SMALL, "independent", False, ""), (DQN_SMALL, "pmeta", True, ""),
    (SAC_SMALL, "pmeta", True, ""), (SAC_SMALL, "pmeta", False, "sac.federate='actor'")],
    ids=["dqn-independent-disk", "dqn-independent-memory", "dqn-pmeta-disk", "sac-pmeta-disk", "sac-actor-memory"])
def test_the_client_apps_off_policy_rounds_equal_one_uninterrupted_learner(tmp_path, small, algorithm, on_disk, extra):
    """Every private piece (φ_i, the replay buffer with its priorities and write position, the target
    network, the Adam moments, the ε-schedule and target-update counters) survives the ClientApp's
    rounds (``context.state``, or the on-disk generations) exactly: three rounds through the real
    ClientApp leave the same uploads, metrics and private state as one client algorithm object that
    keeps everything in memory and is never serialized (the buffer wraps: replay-size 40).  A piece
    lost, re-created or reordered between rounds (a fresh optimizer, an emptied or reshuffled buffer,
    a reset counter) breaks the equality from round 2 on."""
    from fedmeta.algorithms import PrivateState
    from fedmeta.records import record_to_arrays
    from fedmeta.worker import TaskWorker, _load_bytes, initial_meta_policy, tasks_of, to_numpy, to_torch

    node = _DqnNode(tmp_path if on_disk else None, algorithm, small, extra)
    meta = initial_meta_policy(node.cfg)
    live = TaskWorker(node.cfg, tasks_of(node.cfg)[0][0], torch.device("cpu"))
    state = PrivateState()
    with live:
        for server_round in (1, 2, 3):
            reply = node.train(server_round)
            live.solver.start_round()  # as TaskWorker.train_round does: each round starts from resets
            upload, state, report = live.algorithm.train(live.venv, live.spec.horizon, to_torch(meta, live.device),
                                                         state, live._stream(server_round, "train"))
            live.solver.end_round()  # and ends by storing the pending n-step transitions
            assert nested_equal(record_to_arrays(reply.content["arrays"]), to_numpy(upload))
            assert {k: v for k, v in reply.content["metrics"].items() if k != "task-id"} == report.as_metrics()
            assert nested_equal(node.personal(), to_numpy(state.personal))
            optimizers, solver = node.private()
            assert nested_equal(optimizers, state.optimizers) and nested_equal(solver, live.solver.state_dict())
    assert solver["replay"]["size"] == 40 and solver["grad_steps"] > 30 and solver["env_steps"] > 40


@pytest.mark.parametrize("federate", ["actor-critic", "actor"])
def test_sac_private_state_persists_across_rounds_and_never_leaves(tmp_path, federate):
    """The SAC client's replay buffer, target critics, temperature (and its Adam state), private critics
    (``sac.federate='actor'``) and counters carry over between rounds; a reply holds only the federated
    model's arrays (the actor, plus the critics when federated) and scalars."""
    from fedmeta.results import client_state_path
    from fedmeta.worker import initial_meta_policy

    node = _DqnNode(tmp_path, "pmeta", SAC_SMALL, f"sac.federate='{federate}'")
    policy_shapes = {k: v.shape for k, v in initial_meta_policy(node.cfg).items()}
    assert any(k.startswith("critic.") for k in policy_shapes) == (federate == "actor-critic")
    replies = [node.train(1)]
    optimizers, solver = node.private()
    first = replies[0].content["metrics"]
    assert solver["env_steps"] == first["num-env-steps"] and solver["grad_steps"] == first["inner-steps"] > 0
    assert int(solver["alpha_optimizer"]["state"][0]["step"]) == first["inner-steps"]
    assert ("critic" in solver) == (federate == "actor")
    alpha_1, target_1 = solver["log_alpha"].clone(), {k: v.clone() for k, v in solver["target"].items()}

    replies.append(node.train(2))
    optimizers, solver = node.private()
    second = replies[1].content["metrics"]
    assert solver["env_steps"] == first["num-env-steps"] + second["num-env-steps"]
    assert solver["grad_steps"] == first["inner-steps"] + second["inner-steps"]
    assert int(solver["alpha_optimizer"]["state"][0]["step"]) == solver["grad_steps"]
    assert int(optimizers["personal"]["state"][0]["step"]) == solver["grad_steps"]  # the actor's Adam moments
    if federate == "actor":
        assert int(solver["critic_optimizer"]["state"][0]["step"]) == solver["grad_steps"]
    assert solver["replay"]["size"] == 40 and not torch_equal(alpha_1, solver["log_alpha"])
    assert any(not torch_equal(target_1[k], solver["target"][k]) for k in target_1)
    assert client_state_path(tmp_path, 5, 0).is_file()

    for reply in replies:
        assert contract_violation(reply) is None
        assert set(reply.content.array_records) == {"arrays"} and not reply.content.config_records
        assert {k: tuple(a.shape) for k, a in reply.content["arrays"].items()} == policy_shapes
        assert all(isinstance(v, (int, float)) for v in reply.content["metrics"].values())


GRID_SMALL = ("pmeta-gridworld", "task.num-clients=2 fed.clients-per-round=2 prox.local-rounds=2 "
                                   "solver.episodes-per-step=3 eval.episodes=3")


@pytest.mark.parametrize("algorithm", ["pmeta", "fedavg"])
def test_a_tabular_pmeta_reply_is_the_q_table_its_visited_mask_and_scalars(tmp_path, algorithm):
    """Tabular pMeta-RL through the ClientApp: a train reply holds the auxiliary Q-table and the
    visited mask of this round (both float arrays of the table's shape; the mask 1 only on the
    task's own cells), and scalar metrics; nothing else leaves the client."""
    from fedmeta.tasks import TASK_FAMILIES
    from fedmeta.worker import initial_meta_policy, tasks_of

    node = _DqnNode(tmp_path, algorithm, GRID_SMALL)
    spec = tasks_of(node.cfg)[0][0]
    cells = TASK_FAMILIES.get("gridworld-sizes").observations(spec).argmax(1)  # task 0: the 3x3 centre
    assert initial_meta_policy(node.cfg).keys() == {"q", "q.visited"}
    for server_round in (1, 2):
        reply = node.train(server_round)
        assert contract_violation(reply) is None
        assert set(reply.content.array_records) == {"arrays"} and not reply.content.config_records
        arrays = {k: a.numpy() for k, a in reply.content["arrays"].items()}
        assert {k: a.shape for k, a in arrays.items()} == {"q": (121, 5), "q.visited": (121, 5)}
        assert all(a.dtype == np.float32 for a in arrays.values())
        mask = arrays["q.visited"]
        assert set(np.unique(mask)) == {0.0, 1.0} and mask[cells].sum() == mask.sum() > 0
        assert np.abs(arrays["q"]).sum() > 0 and not np.abs(arrays["q"][np.setdiff1d(np.arange(121), cells)]).any()
        assert all(isinstance(v, (int, float)) for v in reply.content["metrics"].values())
        assert reply.content["metrics"]["num-env-steps"] == 2 * 1 * 3 * 20  # R x K steps x 3 episodes x H


def nested_equal(a, b) -> bool:
    """Exact equality of nested dicts / lists / tensors / arrays / scalars."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(nested_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(nested_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch_equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
