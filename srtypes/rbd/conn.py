"""One bounded connection to the cluster per driver call; `ceph_errors` is the error edge
(`sm.edge`) for the cluster's calls.

Every cluster step is bounded: connecting by `client_mount_timeout`, monitor commands by
`rados_mon_op_timeout`, object operations by `rados_osd_op_timeout` (all `timeout` from
device_config), so a dead or partitioned cluster answers SRUnavailable (47) instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager
from typing import Any

from sm.edge import errors_as
from sm.errors import SMError, SRUnavailable

from .ceph import CephUnavailable, load
from .config import RbdConfig

__all__ = ["Connection", "ceph_errors"]

log = logging.getLogger(__name__)


def ceph_errors(fallback: type[SMError], what: str = "") -> AbstractContextManager[None]:
    """`sm.edge.errors_as` for calls to the cluster (``cluster=True``): unreachable / timed out
    -> SRUnavailable 47, ENOSPC -> SRNoSpace 44, ENOENT -> VDIMissing 144, EBUSY -> VDIInUse
    24, others -> `fallback`."""
    return errors_as(fallback, what, cluster=True)


class Connection:
    """`with Connection(config) as conn:` connects (bounded) and opens the pool's I/O context
    in the SR's namespace; closed on exit."""

    def __init__(self, config: RbdConfig) -> None:
        self.config = config
        self.cluster: Any = None
        self.ioctx: Any = None
        try:
            self.rados, self.rbd = load()
        except CephUnavailable as err:
            raise SRUnavailable(str(err)) from err

    def __enter__(self) -> Connection:
        cfg = self.config
        with ceph_errors(SRUnavailable, "connecting to the Ceph cluster"):
            kwargs: dict[str, Any] = {"rados_id": cfg.user, "conf": cfg.rados_options()}
            # None: no file at all ("" would search /etc/ceph and fail without one)
            kwargs["conffile"] = cfg.conf
            try:
                self.cluster = self.rados.Rados(**kwargs)
            except self.rados.Error as err:
                raise SRUnavailable(f"cannot read the Ceph configuration: {err}") from err
            self.cluster.connect(timeout=int(max(1, cfg.timeout)))
        with ceph_errors(SRUnavailable, f"pool {cfg.pool!r}"):
            try:
                self.ioctx = self.cluster.open_ioctx(cfg.pool)
            except self.rados.ObjectNotFound as err:
                self.close()
                raise SRUnavailable(f"the pool {cfg.pool!r} does not exist") from err
            self.ioctx.set_namespace(cfg.namespace)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.ioctx is not None:
            with contextlib.suppress(Exception):
                self.ioctx.close()
            self.ioctx = None
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.shutdown()
            self.cluster = None

    def image(self, name: str, *, snapshot: str | None = None, read_only: bool = False) -> Any:
        """An open `rbd.Image` (a context manager)."""
        return self.rbd.Image(self.ioctx, name, snapshot=snapshot, read_only=read_only)

    def namespace_ioctx(self, namespace: str) -> Any:
        """A second I/O context of the same pool in another namespace (probe)."""
        io = self.cluster.open_ioctx(self.config.pool)
        io.set_namespace(namespace)
        return io
