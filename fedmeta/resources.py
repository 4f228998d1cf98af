"""Checks of this machine against a config, for the local simulation (``fedmeta run``) only.

:meth:`ExperimentConfig.from_flat` also runs on every SuperNode of a deployment, where each
node has its own devices; what *this* machine has (CUDA devices, CPUs, writable directories)
is checked here, by the CLI, before any Flower or Ray process starts.  ``torch`` is imported
only when a config asks for a GPU (importing it is slow).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from fedmeta.config import ConfigError, ExperimentConfig


def check_local_resources(cfg: ExperimentConfig) -> None:
    """Raise a one-line :class:`ConfigError` when this machine cannot run ``cfg``'s simulation."""
    _check_device(cfg.client.device)
    _check_client_gpus(cfg.simulation.client_gpus)
    if cfg.simulation.ray_address:
        _check_ray_head(cfg.simulation.ray_address)


def resource_warnings(cfg: ExperimentConfig) -> list[str]:
    """Settings this machine can run, but probably not as meant (one line each)."""
    cpus = os.cpu_count() or 1
    if cfg.simulation.num_cpus > cpus and not cfg.simulation.ray_address:
        return [f"simulation.num-cpus={cfg.simulation.num_cpus} is more than this machine's {cpus} CPUs; "
                "the simulation will oversubscribe them"]
    return []


def prepare_dir(key: str, path: Path) -> None:
    """Create the directory ``path`` (the value of config key ``key``) and check that it is writable."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}: {str(path)!r} is an existing file; valid: a directory path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot create the directory {str(path)!r} ({exc.strerror or exc}); "
                          "valid: a writable directory path") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: the directory {str(path)!r} is not writable; valid: a writable directory path")


def claim_new_dir(key: str, path: Path) -> Path:
    """Create the time-stamped result directory ``path`` itself, atomically: two runs started in the
    same second with the same experiment, algorithm and seed get the same name, and would otherwise
    write into one directory.  When ``path`` is taken, ``<name>-2`` (``-3``, ...) is tried instead;
    returns the directory created.  ``key``: the config key that chose its parent."""
    prepare_dir(key, path.parent)
    for attempt in range(1, 1000):
        candidate = path if attempt == 1 else path.with_name(f"{path.name}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"{key}: cannot create the directory {str(candidate)!r} ({exc.strerror or exc}); "
                              "valid: a writable directory path") from None
        return candidate
    raise ConfigError(f"{key}: {str(path)!r} and 998 numbered variants of it already exist; valid: another output-dir")


def check_new_run_dir(key: str, path: Path) -> None:
    """A run writes into a new or empty directory only: one that already holds a run (or anything
    else) would mix two runs' rows and let the new run's clients warm-start from the old run's state.
    ``key``: the config key that chose ``path``."""
    from fedmeta.results import run_files

    if not path.is_dir():
        return  # new (prepare_dir creates it), or a file in the way (prepare_dir says so)
    try:
        entries = sorted(entry.name for entry in path.iterdir())
    except OSError as exc:
        raise ConfigError(f"{key}={str(path)!r}: cannot list the directory ({exc.strerror or exc}); "
                          "valid: an empty or new directory") from None
    if not entries:
        return
    held = run_files(path)
    shown = ", ".join(held or entries[:5]) + (", ..." if not held and len(entries) > 5 else "")
    what = f"already holds a run ({shown})" if held else f"is not empty ({shown})"
    raise ConfigError(f"{key}={str(path)!r}: the directory {what}; valid: an empty or new directory")


def cuda_device_count() -> int:
    """CUDA devices torch can use here (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _check_device(device: str) -> None:
    if not device.startswith("cuda"):
        return
    count = cuda_device_count()
    if count == 0:
        raise ConfigError(f"client.device={device!r} needs CUDA, which is not available on this machine; "
                          "valid here: auto, cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise ConfigError(f"client.device={device!r} is invalid: this machine has {count} CUDA device(s); "
                          f"valid: auto, cpu, cuda, cuda:0..cuda:{count - 1}")


def _check_client_gpus(client_gpus: float) -> None:
    if client_gpus > 0 and cuda_device_count() == 0:
        raise ConfigError(f"simulation.client-gpus={client_gpus} needs a CUDA GPU, which is not available on this "
                          "machine; valid here: 0")


def _check_ray_head(address: str, timeout: float = 3.0) -> None:
    """A Ray head node (its GCS port) accepts connections at ``address`` (``HOST:PORT``)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"simulation.ray-address={address!r}: no Ray head node answers there "
                          f"({exc.strerror or exc}); valid: '' or the HOST:PORT that `ray start --head` "
                          "printed") from None
