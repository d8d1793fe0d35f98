"""Random sequences of create / write / snapshot / clone / revert / delete (and collector runs
in between), then the collector: every VDI reads what a model says, no garbage is left, no
hidden base with a single child (chains as short as the snapshots allow), every image checks
clean, records and files agree."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gc.support import MiB, check_sr, gc_run, make_sr
from tests.srtypes.file.conftest import FileSRClient

SIZE = 4 * MiB
OPS = ("create", "write", "write", "snapshot", "snapshot", "single", "clone", "revert",
       "delete", "delete", "gc", "resize")

op_lists = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10_000),
                              st.integers(0, 10_000)), min_size=4, max_size=16)


class Model:
    def __init__(self, sr: FileSRClient) -> None:
        self.sr = sr
        self.content: dict[str, bytes] = {}
        self.read_only: dict[str, bool] = {}

    def pick(self, i: int) -> str | None:
        names = sorted(self.content)
        return names[i % len(names)] if names else None

    def has_children(self, u: str) -> bool:
        return any(r["parent"] == u for r in self.sr.records().values())

    def apply(self, op: str, i: int, j: int) -> None:
        sr = self.sr
        if op == "create" or not self.content:
            u = sr.create_vdi(SIZE)
            self.content[u], self.read_only[u] = bytes(SIZE), False
            return
        u = self.pick(i)
        assert u is not None
        if op == "write":
            if self.read_only[u] or self.has_children(u):
                return
            rng = random.Random(j)
            size = len(self.content[u])
            off, n = rng.randrange(size - 1), rng.randrange(1, MiB)
            n = min(n, size - off)
            data = rng.randbytes(n)
            sr.write(u, off, data)
            c = bytearray(self.content[u])
            c[off:off + n] = data
            self.content[u] = bytes(c)
        elif op in ("snapshot", "clone", "single"):
            if op == "clone":
                new = sr.clone(u)
            elif op == "single":
                new = sr.snapshot(u, driver_params={"type": "single"})
            else:
                new = sr.snapshot(u)
            self.content[new] = self.content[u]
            self.read_only[new] = op != "clone"  # snapshots never change; a clone is writable
        elif op == "revert":
            target = self.pick(j)
            if (target == u or target is None or self.read_only[target]
                    or self.has_children(target)):
                return
            sr.revert(u, target)
            self.content[target] = self.content[u]
        elif op == "resize":
            if self.read_only[u] or self.has_children(u):
                return
            grown = len(self.content[u]) + (j % 3 + 1) * MiB
            sr.call("vdi_resize", [str(grown)], vdi=u)
            self.content[u] = self.content[u].ljust(grown, b"\0")
        elif op == "delete":
            sr.call("vdi_delete", vdi=u)
            del self.content[u], self.read_only[u]
        elif op == "gc":
            assert gc_run(sr)["result"] == "done"
            check_sr(sr, self.content)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=op_lists, final=st.sampled_from([MiB, 64 * MiB]))
def test_collector_matches_the_model(ops: list[tuple[str, int, int]], final: int) -> None:
    saved = os.environ.get("SM_GC_FINAL_BYTES")
    os.environ["SM_GC_FINAL_BYTES"] = str(final)
    try:
        with tempfile.TemporaryDirectory(prefix="smgc-") as tmp:
            sr = make_sr(Path(tmp))
            model = Model(sr)
            for op, i, j in ops:
                model.apply(op, i, j)
            check_sr(sr, model.content, collected=False)
            summary = gc_run(sr)
            assert summary["result"] == "done" and summary["skipped"] == []
            check_sr(sr, model.content)
            assert gc_run(sr)["actions"] == []  # nothing left to do
    finally:
        if saved is None:
            os.environ.pop("SM_GC_FINAL_BYTES", None)
        else:
            os.environ["SM_GC_FINAL_BYTES"] = saved
