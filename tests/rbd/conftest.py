"""The session's Ceph cluster (one per pytest-xdist worker: its own port and directory) and a
fresh RBD namespace per test, so SRs of different tests never meet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rbd.cluster import Cluster
from tests.rbd.support import ceph_available, new_namespace


@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = ceph_available()
    if reason:
        pytest.skip(reason)
    from tests.rbd.cluster import start_cluster

    try:
        cluster = start_cluster(Path(tmp_path_factory.mktemp("ceph")))
    except RuntimeError:  # e.g. another worker took the free port first: once more
        cluster = start_cluster(Path(tmp_path_factory.mktemp("ceph")))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def rbd_namespace(ceph_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> str:
    return new_namespace(ceph_cluster, monkeypatch)
