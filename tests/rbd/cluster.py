"""A real single-node Ceph cluster for tests and benchmarks: one ceph-mon and one memstore
ceph-osd on 127.0.0.1, cephx on, a private port and directory per cluster (so parallel pytest
workers each run their own), children of the caller, stopped with SIGTERM.

Facts (../shared/reference/machines.md): Debian 12's Pacific packages; no mgr (RBD does not
need one); ``paxos propose interval`` shortened (else bring-up takes 8 s); pool size 1;
``osd fast shutdown = false`` (memstore keeps data over SIGTERM only then).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PACKAGES", "Cluster", "missing_tools", "start_cluster"]

PACKAGES = ("ceph-mon", "ceph-osd", "ceph-common", "python3-rbd", "python3-rados")
TOOLS = ("ceph-mon", "ceph-osd", "ceph", "rbd", "rados", "ceph-authtool", "monmaptool")
POOL = "rbd"
START_TIMEOUT = 60.0

CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
mon initial members = a
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {dir}/keyring.admin
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
log file = {dir}/log/$name.log
pid file = {dir}/run/$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
paxos propose interval = 0.05
osd snap trim sleep hdd = 0
osd snap trim sleep = 0
osd fast shutdown = false
osd objectstore = memstore
memstore device bytes = 4294967296
osd data = {dir}/osd/$cluster-$id
mon data = {dir}/mon/$cluster-$id
osd op num shards = 2
osd op num threads per shard = 1
mon osd full ratio = 0.99
mon osd nearfull ratio = 0.98
osd max object name len = 256
osd max object namespace len = 64
client mount timeout = 10
rados mon op timeout = 10
rados osd op timeout = 10
[mon]
keyring = {dir}/keyring.mon
[osd]
keyring = {dir}/osd/$cluster-$id/keyring
"""


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running cluster: `conf` (its ceph.conf), `keyring` (client.admin), `port`."""

    dir: Path
    port: int
    fsid: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> str:
        return str(self.dir / "ceph.conf")

    @property
    def keyring(self) -> str:
        return str(self.dir / "keyring.admin")

    @property
    def monitors(self) -> str:
        return f"v2:127.0.0.1:{self.port}"

    def run(self, *argv: str, timeout: float = 30.0, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """A ceph / rbd / rados command against this cluster."""
        cmd = [argv[0], "--conf", self.conf, *argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: {proc.returncode}: {proc.stderr.decode()[-2000:]}")
        return proc

    def _daemon(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / "log" / f"{name}.out", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        log.close()

    def start_mon(self) -> None:
        self._daemon("mon", ["ceph-mon", "-f", "-i", "a", "--conf", self.conf])
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            proc = self.run("ceph", "--connect-timeout", "5", "mon", "stat", check=False, timeout=15)
            if proc.returncode == 0:
                return
            if self.procs["mon"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ceph-mon did not come up: {proc.stderr.decode()[-2000:]}")
            time.sleep(0.05)

    def start_osd(self) -> None:
        self._daemon("osd", ["ceph-osd", "-f", "-i", "0", "--conf", self.conf])

    def wait_osd_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            out = self.run("ceph", "osd", "dump", "--format", "json", timeout=15).stdout
            import json

            osds = json.loads(out)["osds"]
            if osds and osds[0].get("up") == 1:
                return
            if self.procs["osd"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ceph-osd did not come up")
            time.sleep(0.05)

    def stop_daemon(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        """SIGTERM to the OSD, then the mon (children of this process only)."""
        for name in ("osd", "mon"):
            self.stop_daemon(name)


def start_cluster(base: Path) -> Cluster:
    """Build and start a fresh cluster in `base` (which must not exist or be empty); returns
    once pool `rbd` is usable (about 2-3 s)."""
    base.mkdir(parents=True, exist_ok=True)
    for sub in ("run", "log", "mon/ceph-a", "osd/ceph-0"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    cluster = Cluster(dir=base, port=_free_port(), fsid=str(uuid.uuid4()))
    (base / "ceph.conf").write_text(CONF.format(fsid=cluster.fsid, port=cluster.port, dir=base))

    def tool(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    monkey = str(base / "keyring.mon")
    tool("ceph-authtool", "--create-keyring", monkey, "--gen-key", "-n", "mon.",
         "--cap", "mon", "allow *")
    tool("ceph-authtool", "--create-keyring", cluster.keyring, "--gen-key", "-n", "client.admin",
         "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mds", "allow *",
         "--cap", "mgr", "allow *")
    tool("ceph-authtool", monkey, "--import-keyring", cluster.keyring)
    monmap = str(base / "monmap")
    tool("monmaptool", "--create", "--fsid", cluster.fsid, "--addv", "a",
         f"[v2:127.0.0.1:{cluster.port}]", monmap)
    tool("ceph-mon", "--conf", cluster.conf, "--mkfs", "-i", "a", "--monmap", monmap,
         "--keyring", monkey)
    try:
        cluster.start_mon()
        osd_uuid = str(uuid.uuid4())
        cluster.run("ceph", "osd", "new", osd_uuid)
        osdkey = str(base / "osd" / "ceph-0" / "keyring")
        cluster.run("ceph", "auth", "get-or-create", "osd.0", "mon", "allow profile osd",
                    "osd", "allow *", "mgr", "allow profile osd", "-o", osdkey)
        tool("ceph-osd", "--conf", cluster.conf, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid,
             "--keyring", osdkey)
        cluster.start_osd()
        cluster.run("ceph", "osd", "pool", "create", POOL, "8", "8")
        cluster.run("ceph", "osd", "pool", "set", POOL, "size", "1", "--yes-i-really-mean-it")
        cluster.wait_osd_up()
        cluster.run("rbd", "pool", "init", POOL, timeout=60)
    except BaseException:
        cluster.stop()
        raise
    return cluster


if __name__ == "__main__":  # python -m tests.rbd.cluster <dir>: start one by hand
    import sys

    c = start_cluster(Path(sys.argv[1]))
    print(c.conf)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
    c.stop()
