"""`sm serve` figures: calls per second of a cheap command with 1 and 16 clients, and the
latency of a VM snapshot of 4 disks, against baselines measured in the same run.

    .venv/bin/python benchmarks/bench_server.py            # 3 s per phase, 9 VM snapshots
    .venv/bin/python benchmarks/bench_server.py --quick    # a few seconds (the test suite)

Baselines: the same calls to Python's own `xmlrpc.server.SimpleXMLRPCServer` (threading, one
`ping` function, a child process like ours) for calls/s; 4 single-VDI snapshots over our
server, one after the other, for the VM snapshot. Clients are `xmlrpc.client.ServerProxy`
threads with one kept-alive connection each. Everything runs in a temporary SM_HOME on a File
SR (SM_DATA_PATH=none: no NBD servers).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sm.server.client import connect  # noqa: E402

BASELINE = """
import sys
from socketserver import ThreadingMixIn
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer
class Handler(SimpleXMLRPCRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
class Server(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
s = Server(("127.0.0.1", 0), Handler, logRequests=False, allow_none=True)
s.register_function(lambda: "pong", "ping")
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def _start(argv: list[str], env: dict[str, str], pattern: bytes) -> tuple[subprocess.Popen[bytes],
                                                                          str]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(pattern, line)
    if match is None:
        proc.kill()
        raise SystemExit(f"{argv[0]} did not start: {line!r}")
    return proc, match.group(1).decode()


def rate(make: Callable[[], Callable[[], object]], clients: int, seconds: float) -> float:
    """Calls per second over `clients` threads, each with its own connection."""
    calls = [0] * clients
    barrier = threading.Barrier(clients + 1)
    stop = [0.0]

    def run(i: int) -> None:
        call = make()
        call()  # connect outside the timed window
        barrier.wait()
        n = 0
        while time.monotonic() < stop[0]:
            call()
            n += 1
        calls[i] = n

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop[0] = time.monotonic() + seconds + 1e9  # set for real once all are connected
    barrier.wait()
    start = time.monotonic()
    stop[0] = start + seconds
    for t in threads:
        t.join()
    return sum(calls) / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (smoke run)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per rate phase")
    parser.add_argument("--snapshots", type=int, default=None, help="VM snapshots timed")
    opts = parser.parse_args()
    seconds = opts.seconds or (0.5 if opts.quick else 3.0)
    reps = opts.snapshots or (2 if opts.quick else 9)

    home = Path(tempfile.mkdtemp(prefix="sm-bench-server-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update({"SM_HOME": str(home), "SM_RUN_DIR": str(home / "run"), "SM_DATA_PATH": "none"})
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ours, address = _start([str(ROOT / ".venv" / "bin" / "sm"), "serve", "--listen",
                                "127.0.0.1:0", "--log-file", str(home / "server.log")],
                               env, rb"listening on (\S+)")
        procs.append(ours)
        token = (home / "state" / "server.token").read_text().strip()
        base, port = _start([sys.executable, "-c", BASELINE], env, rb"(\d+)")
        procs.append(base)
        base_url = f"http://127.0.0.1:{port}/"

        def ping_ours() -> Callable[[], object]:
            return connect(address, token).sm.ping  # type: ignore[no-any-return]

        def info_ours() -> Callable[[], object]:
            proxy = connect(address, token)
            return lambda: proxy.smapi.file.sr_get_driver_info({})

        def ping_base() -> Callable[[], object]:
            return xmlrpc.client.ServerProxy(base_url).ping  # type: ignore[no-any-return]

        print(f"calls/s, {seconds:g} s per phase (ratio = sm serve / stdlib SimpleXMLRPCServer)")
        for clients in (1, 16):
            b = rate(ping_base, clients, seconds)
            p = rate(ping_ours, clients, seconds)
            d = rate(info_ours, clients, seconds)
            print(f"  {clients:2d} client(s): baseline ping {b:8.0f}/s   sm.ping {p:8.0f}/s "
                  f"(ratio {p / b:.2f})   smapi.file.sr_get_driver_info {d:8.0f}/s "
                  f"(ratio {d / b:.2f})")

        api = connect(address, token)
        disks = [api.vdi.create(64 << 20, f"d{i}")["uuid"] for i in range(4)]
        api.vm.create("bench")
        for d in disks:
            api.vm.add_disk("bench", d)
            api.vdi.write(d, 0, b"x" * 65536)
        vm_times, vdi_times = [], []
        for i in range(reps):
            t0 = time.perf_counter()
            api.vm.snapshot("bench", f"s{i}")
            vm_times.append(time.perf_counter() - t0)
            api.vm.snapshot_delete("bench", f"s{i}")
            t0 = time.perf_counter()
            snaps = [api.vdi.snapshot(d, f"v{i}")["uuid"] for d in disks]
            vdi_times.append(time.perf_counter() - t0)
            for s in snaps:
                api.vdi.delete(s)
        vm_ms, vdi_ms = statistics.median(vm_times) * 1e3, statistics.median(vdi_times) * 1e3
        print(f"VM snapshot of 4 disks, median of {reps}: {vm_ms:.1f} ms; baseline 4 single "
              f"vdi.snapshot calls: {vdi_ms:.1f} ms (ratio {vdi_ms / vm_ms:.2f})")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
