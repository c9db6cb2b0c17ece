"""The Ray a sweep's jobs run on: the one this process already runs (a test driver, a notebook),
or one started or joined for the sweep with hydra.launcher.ray.init and shut down after it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from hydra_plugins.composer_ray_launcher.ray_launcher import RayLaunchError


@contextmanager
def ray_session(init: dict[str, Any]) -> Iterator[str]:
    """Ray for the sweep, and where it is in words for the log. `init` goes to ray.init, except
    that address null starts a Ray of the sweep's own ("local") unless RAY_ADDRESS names a
    cluster: ray.init(address=None) would join any cluster started on this machine before
    (/tmp/ray/ray_current_cluster), and wait for it when it has gone. `auto` joins RAY_ADDRESS's
    cluster or the one running on this machine, `ray://host:10001` one elsewhere."""
    if ray.is_initialized():
        yield f"{_where()} (this process's Ray)"
        return
    if init.get("address") is None and not os.environ.get("RAY_ADDRESS"):
        init = {**init, "address": "local"}
    try:
        ray.init(**init)
    except TypeError as error:  # a key ray.init does not take
        raise RayLaunchError(f"hydra.launcher.ray.init: {error}") from None
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise RayLaunchError(
            f"Ray could not start or join a cluster with hydra.launcher.ray.init={init}: {error}\n"
            "address=auto joins the Ray cluster running on this machine (`ray start --head` starts one), "
            "address=null starts a local Ray for the sweep, RAY_ADDRESS=... in the environment names a cluster") from None
    try:
        yield _where()
    finally:
        ray.shutdown()


def _where() -> str:
    """The cluster's address and size: `127.0.0.1:6379 (2 nodes: 2 CPU, 2 GPU)`."""
    resources = ray.cluster_resources()
    size = ", ".join(f"{resources[key]:g} {key}" for key in ("CPU", "GPU") if resources.get(key))
    nodes = sum(node["Alive"] for node in ray.nodes())
    return f"{ray.get_runtime_context().gcs_address} ({nodes} node{'s' * (nodes != 1)}: {size})"
