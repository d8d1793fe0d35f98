"""`device_config` of the RBD SR, validated once (`RbdConfig.parse`).

| key | meaning |
|---|---|
| `conf` | path of a ceph.conf (monitors, auth, keyring); or |
| `monitors` | comma-separated monitor addresses (`v2:10.0.0.1:3300,10.0.0.2`) |
| `pool` | the RADOS pool (required) |
| `namespace` | an RBD namespace of the pool owned by this SR (default: the pool's default) |
| `user` | the cephx client name without `client.` (default `admin`) |
| `keyring` | keyring path (required with `monitors` but no `conf`, unless `auth=none`) |
| `auth` | `cephx` (default) or `none` |
| `timeout` | seconds any one cluster step may take (connect, mon or OSD op; default 10) |

Missing cluster (`conf` and `monitors`): ConfigServerMissing (102); missing `pool`, or
`keyring` where needed: ConfigParamsMissing (115); malformed values: InvalidArg (1).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sm.errors import ConfigParamsMissing, ConfigServerMissing, InvalidArg

__all__ = ["DEFAULT_TIMEOUT", "RbdConfig"]

DEFAULT_TIMEOUT = 10.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_MON = re.compile(r"[A-Za-z0-9.:\[\]/_-]+\Z")


@dataclass(frozen=True)
class RbdConfig:
    pool: str
    namespace: str = ""
    conf: str | None = None
    monitors: str | None = None
    user: str = "admin"
    keyring: str | None = None
    auth: str = "cephx"
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def parse(cls, dconf: Mapping[str, str]) -> RbdConfig:
        conf = dconf.get("conf") or None
        monitors = dconf.get("monitors") or None
        if conf is None and monitors is None:
            raise ConfigServerMissing("device_config needs conf (a ceph.conf path) or "
                                      "monitors (monitor addresses)")
        if conf is not None and not os.path.isabs(conf):
            raise InvalidArg(f"conf must be an absolute path: {conf!r}")
        if monitors is not None and not all(_MON.match(m.strip()) for m in monitors.split(",")):
            raise InvalidArg(f"monitors is not a list of addresses: {monitors!r}")
        pool = dconf.get("pool")
        if not pool:
            raise ConfigParamsMissing("device_config needs pool (the RADOS pool of the SR)")
        namespace = dconf.get("namespace", "")
        user = dconf.get("user") or "admin"
        for key, value in (("pool", pool), ("namespace", namespace), ("user", user)):
            if value and not _NAME.match(value):
                raise InvalidArg(f"{key} must be 1-63 characters of [A-Za-z0-9._-]: {value!r}")
        auth = dconf.get("auth") or "cephx"
        if auth not in ("cephx", "none"):
            raise InvalidArg(f"auth must be cephx or none: {auth!r}")
        keyring = dconf.get("keyring") or None
        if keyring is not None and not os.path.isabs(keyring):
            raise InvalidArg(f"keyring must be an absolute path: {keyring!r}")
        if conf is None and keyring is None and auth == "cephx":
            raise ConfigParamsMissing("device_config needs keyring (or conf) for cephx")
        try:
            timeout = float(dconf.get("timeout") or DEFAULT_TIMEOUT)
        except ValueError:
            raise InvalidArg(f"timeout is not a number: {dconf['timeout']!r}") from None
        if not 0 < timeout <= 600:
            raise InvalidArg(f"timeout must be in (0, 600] seconds: {timeout}")
        return cls(pool=pool, namespace=namespace, conf=conf, monitors=monitors, user=user,
                   keyring=keyring, auth=auth, timeout=timeout)

    def rados_options(self) -> dict[str, str]:
        """librados options: the bounds that keep every call from hanging on a dead cluster."""
        t = str(int(max(1.0, self.timeout)))
        opts = {
            "client_mount_timeout": t, "rados_mon_op_timeout": t, "rados_osd_op_timeout": t,
            "log_to_stderr": "false", "err_to_stderr": "false", "log_file": "",
        }
        if self.monitors:
            opts["mon_host"] = self.monitors
        if self.keyring:
            opts["keyring"] = self.keyring
        if self.auth == "none":
            opts["auth_client_required"] = "none"
        return opts

    def to_json(self) -> dict[str, object]:
        """What the nbdkit side needs to connect (no secrets: only the keyring's path)."""
        return {"pool": self.pool, "namespace": self.namespace, "conf": self.conf,
                "user": self.user, "options": self.rados_options()}
