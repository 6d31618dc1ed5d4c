"""Past one machine: sharded galleries and bulk jobs on Dask.

``shards`` splits a gallery into shard galleries placed by a stable hash of the identity id, with
a checksummed manifest (and merges them back) — no Dask needed; ``merge`` is the exact merge of
per-shard top-k lists; ``worker`` what runs on a Dask worker (shards opened from their paths and
kept open); ``cluster`` connects to a local or remote Dask cluster; ``sharded`` holds
:class:`ShardedGallery` (identify, verify, enroll, remove, info over a cluster); ``jobs`` runs the
bulk identify / verify jobs on a cluster with the same output, manifest and resume as
:mod:`pyfacematch.jobs`. Dask itself is imported only when a cluster is used
(``pip install 'pyfacematch[distributed]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyfacematch.distributed.shards import (
    ShardManifest,
    merge_shards,
    read_manifest,
    shard_of,
    split_gallery,
    verify_shard,
)

if TYPE_CHECKING:
    from pyfacematch.distributed.cluster import ClusterHandle, connect
    from pyfacematch.distributed.jobs import identify_job_cluster, verify_job_cluster
    from pyfacematch.distributed.sharded import ShardedGallery

__all__ = [
    "ClusterHandle",
    "ShardManifest",
    "ShardedGallery",
    "connect",
    "identify_job_cluster",
    "merge_shards",
    "read_manifest",
    "shard_of",
    "split_gallery",
    "verify_job_cluster",
    "verify_shard",
]

_LAZY = {
    "ClusterHandle": "pyfacematch.distributed.cluster",
    "connect": "pyfacematch.distributed.cluster",
    "ShardedGallery": "pyfacematch.distributed.sharded",
    "identify_job_cluster": "pyfacematch.distributed.jobs",
    "verify_job_cluster": "pyfacematch.distributed.jobs",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'pyfacematch.distributed' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)
