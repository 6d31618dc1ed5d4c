"""Connecting to Dask: a local cluster in one word, or any scheduler address.

``"local"`` starts a :class:`distributed.LocalCluster` of worker *processes* (one per core,
one thread each: the core's kernels bring their own threads), ``"local:N"`` N of them; a
``tcp://HOST:PORT`` or ``tls://HOST:PORT`` address connects to a running scheduler (Slurm via
dask-jobqueue, Kubernetes via dask-kubernetes, …). TLS certificates come from Dask's own
configuration (``distributed.comm.tls.*``, e.g. ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``), so
nothing security-related is re-invented here.
"""

from __future__ import annotations

import os
from typing import Any

from pyfacematch.errors import ClusterError, InputError

__all__ = [
    "LOCAL_CONFIG",
    "WORKER_WAIT",
    "ClusterHandle",
    "connect",
    "require_dask",
    "wait_for_workers",
]

#: Seconds to wait for a worker to join when a cluster has none for the moment (a killed worker
#: being replaced by its nanny, a cluster still scaling up, a machine under heavy load).
WORKER_WAIT = 60.0


#: Dask settings of the local clusters :func:`connect` starts (give a remote cluster the same,
#: e.g. ``DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=1s``). Shards are pinned to workers on
#: purpose: work stealing would move a shard's task to a worker that must open (and read) that
#: shard again. The rest is Dask's own bookkeeping, which costs CPU every second of a job
#: whether tasks run or not (measured on an idle 2-worker cluster, 2 cores: 0.023 CPU s per
#: second per worker and 0.038 in the client's process, which holds the scheduler and the
#: nannies; ~0.004-0.012 and ~0.010-0.024 with these): the event loop's tick (a timer every
#: 20 ms in every process, only there to warn of a blocked loop), the system monitor (every
#: 500 ms, for the dashboard's graphs), each worker's statistical profiler (its stack sampled
#: every 10 ms, for the dashboard's profile page) and the memory monitor (every 100 ms; 500 ms
#: still stops a worker running over its memory limit).
LOCAL_CONFIG: dict[str, Any] = {
    "distributed.scheduler.work-stealing": False,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def wait_for_workers(client: Any, n: int = 1, timeout: float | None = None) -> list[str]:
    """The addresses of the cluster's workers, sorted, once at least ``n`` have joined.

    Returns at once when they are there; otherwise waits up to ``timeout`` seconds
    (:data:`WORKER_WAIT` by default).

    Raises
    ------
    ClusterError
        Fewer than ``n`` workers after ``timeout`` seconds.
    """
    ws = sorted(client.scheduler_info().get("workers", {}))
    if len(ws) >= n:
        return ws
    wait = WORKER_WAIT if timeout is None else float(timeout)
    try:
        client.wait_for_workers(n, timeout=wait)
    except (TimeoutError, OSError) as exc:
        raise ClusterError(
            f"the Dask cluster has {len(ws)} workers, and {n} did not join within {wait:.0f} s: "
            "start workers (dask worker SCHEDULER_ADDRESS), or use --cluster local"
        ) from exc
    return sorted(client.scheduler_info().get("workers", {}))


def require_dask() -> Any:
    """Import ``distributed`` or say how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(
            "running on a Dask cluster needs dask[distributed]: "
            "pip install 'pyfacematch[distributed]'"
        ) from exc
    return distributed


def _parse_local(spec: str) -> int:
    if spec == "local":
        return max(1, os.cpu_count() or 1)
    head, _, n = spec.partition(":")
    if head != "local" or not n.isdigit() or int(n) < 1:
        raise InputError(
            f"--cluster takes 'local' or 'local:N' (N worker processes), got {spec!r}; "
            "use --scheduler tcp://HOST:PORT for a running cluster"
        )
    return int(n)


class ClusterHandle:
    """A Dask client, and the local cluster it started (closed with the handle).

    Use as a context manager; ``client`` is a :class:`distributed.Client`.
    """

    def __init__(self, client: Any, cluster: Any = None) -> None:
        self.client = client
        self.cluster = cluster

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> ClusterHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    cluster: str | None = None,
    scheduler: str | None = None,
    *,
    threads_per_worker: int = 1,
    timeout: float = 30.0,
) -> ClusterHandle:
    """A client of a new local cluster (``cluster="local[:N]"``) or of ``scheduler``.

    Raises
    ------
    InputError
        Both or neither given; a bad ``local:N``.
    ClusterError
        Dask is not installed, or the scheduler cannot be reached within ``timeout`` seconds.
    """
    if (cluster is None) == (scheduler is None):
        raise InputError("give exactly one of --cluster local[:N] or --scheduler ADDRESS")
    distributed = require_dask()
    if cluster is not None:
        n = _parse_local(cluster)
        import dask

        try:
            # shards are pinned to workers on purpose: work stealing would move a shard's task
            # to a worker that must open (and read) that shard again; and each worker's
            # statistical profiler (a thread sampling the task's stack every 10 ms, for the
            # dashboard's profile page) is CPU the job does not need on a machine it shares
            with dask.config.set(LOCAL_CONFIG):
                lc = distributed.LocalCluster(
                    n_workers=n,
                    threads_per_worker=int(threads_per_worker),
                    processes=True,
                    # core threads per worker process (read by pyfacematch.distributed.worker)
                    env={"PYFACEMATCH_WORKER_THREADS": str(int(threads_per_worker))},
                    dashboard_address=":0",  # a free port: never clash with another cluster
                )
        except Exception as exc:  # ports, resources
            raise ClusterError(f"cannot start a local Dask cluster of {n} workers: {exc}") from exc
        client = distributed.Client(lc)
        try:  # every worker process has joined before the first task is placed
            wait_for_workers(client, n, timeout)
        except ClusterError:
            client.close()
            lc.close()
            raise
        return ClusterHandle(client, lc)
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:.0f} s ({exc}): "
            "check the address and that the scheduler is running (and its TLS settings)"
        ) from exc
    return ClusterHandle(client)
