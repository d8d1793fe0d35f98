"""device_config of the RBD SR (no cluster needed)."""

from __future__ import annotations

import pytest

from sm.errors import ConfigParamsMissing, ConfigServerMissing, InvalidArg
from srtypes.rbd.config import RbdConfig


def test_minimal_and_defaults() -> None:
    cfg = RbdConfig.parse({"conf": "/etc/ceph/ceph.conf", "pool": "rbd"})
    assert (cfg.user, cfg.namespace, cfg.auth, cfg.timeout) == ("admin", "", "cephx", 10.0)
    opts = cfg.rados_options()
    for key in ("client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"):
        assert opts[key] == "10", key  # every cluster step is bounded


def test_monitors_need_a_keyring() -> None:
    with pytest.raises(ConfigParamsMissing):
        RbdConfig.parse({"monitors": "v2:10.0.0.1:3300", "pool": "p"})
    cfg = RbdConfig.parse({"monitors": "v2:10.0.0.1:3300,10.0.0.2", "pool": "p",
                           "keyring": "/k", "user": "xcp", "timeout": "3"})
    assert cfg.rados_options()["mon_host"] == "v2:10.0.0.1:3300,10.0.0.2"
    assert cfg.rados_options()["keyring"] == "/k" and cfg.rados_options()["rados_osd_op_timeout"] == "3"
    RbdConfig.parse({"monitors": "10.0.0.1", "pool": "p", "auth": "none"})


@pytest.mark.parametrize(("dconf", "error"), [
    ({"pool": "rbd"}, ConfigServerMissing),
    ({"conf": "/c"}, ConfigParamsMissing),
    ({"conf": "relative.conf", "pool": "rbd"}, InvalidArg),
    ({"conf": "/c", "pool": "a/b"}, InvalidArg),
    ({"conf": "/c", "pool": "rbd", "namespace": "../x"}, InvalidArg),
    ({"conf": "/c", "pool": "rbd", "timeout": "soon"}, InvalidArg),
    ({"conf": "/c", "pool": "rbd", "timeout": "0"}, InvalidArg),
    ({"conf": "/c", "pool": "rbd", "auth": "kerberos"}, InvalidArg),
    ({"monitors": "a b", "pool": "rbd", "keyring": "/k"}, InvalidArg),
])
def test_refused(dconf: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        RbdConfig.parse(dconf)
