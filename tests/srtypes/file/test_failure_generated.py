"""Generated cases of failure containment (issue 15 §1) on a File SR, beyond the listed ones:

- any size given to vdi_create / vdi_resize is either accepted (the VDI then has at least that
  size) or refused with VDISize (79) and nothing changed; never 1200, never a journal entry;
- sequences of chain operations, each made to fail (SM_FAIL_AT) at a random one of its steps
  or not at all: after each, no journal entry is left, records and images agree, and the
  operation either happened entirely or not at all (read back against a model).

`pytest --hypothesis-profile=long` runs many more examples.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sm import faults, vhd
from srtypes.file import FileSR

from .conftest import FileSRClient, MiB, SMFault

SIZES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, 511, 512, 2040 * 1024**3, 2040 * 1024**3 + 1, 16 * 1024**4 - 4096,
                     16 * 1024**4, 17 * 1024**4, 2**63 - 512, 2**63 - 1]),
    st.integers(0, 64 * MiB),
)
_SETTINGS = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


def _journal(sr: FileSRClient) -> list[str]:
    d = sr.location / ".sm" / "journal"
    return [n for n in os.listdir(d) if n.endswith(".json")] if d.is_dir() else []


@pytest.fixture(scope="module")
def msr(tmp_path_factory: pytest.TempPathFactory) -> FileSRClient:
    base = tmp_path_factory.mktemp("gen")
    client = FileSRClient(base / "sr", base / "run")
    client.call("sr_create", ["0"])
    client.call("sr_attach")
    return client


@_SETTINGS
@given(size=SIZES, raw=st.booleans(), resize=st.booleans())
def test_any_size_is_accepted_or_79(msr: FileSRClient, size: int, raw: bool,
                                    resize: bool) -> None:
    sm_config = {"vdi_sm_config": {"type": "raw"}} if raw else {}
    before = msr.records()
    try:
        if resize:
            x = msr.create_vdi(size=MiB, **sm_config)
            before = msr.records()
            msr.call("vdi_resize", [str(size)], vdi=x)
            got = int(msr.record(x)["virtual_size"])
        else:
            x = msr.create_vdi(size=size, **sm_config)
            got = int(msr.record(x)["virtual_size"])
    except SMFault as err:
        # a shrink is refused with 79 too; anything else is a bug
        assert err.code == 79, err
        assert msr.records() == before
    else:
        assert got >= size
    assert _journal(msr) == []
    for u in msr.records():
        msr.call("vdi_delete", vdi=u)


OPS = ("vdi_snapshot", "vdi_clone", "vdi_revert", "vdi_delete", "vdi_resize")


@settings(_SETTINGS, max_examples=10)
@given(plan=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 7), st.integers(0, 3)),
                     min_size=3, max_size=8))
def test_failing_operations_are_all_or_nothing(tmp_path_factory: pytest.TempPathFactory,
                                               monkeypatch: pytest.MonkeyPatch,
                                               plan: list[tuple[str, int, int]]) -> None:
    base = tmp_path_factory.mktemp("seq")  # an SR per example: a failed one leaves nothing
    msr = FileSRClient(base / "sr", base / "run")
    msr.call("sr_create", ["0"])
    msr.call("sr_attach")
    monkeypatch.setattr(faults, "_ARMED", True)
    x = msr.create_vdi(size=4 * MiB, name="x")
    content = {x: b"x0"}
    msr.write(x, 0, b"x0")
    snaps: list[str] = []
    for n, (op, step_no, pick) in enumerate(plan):
        steps = FileSR.CRASH_POINTS[op]
        step = steps[step_no] if step_no < len(steps) else None  # None: no failure
        faults._hits.clear()
        if step is None:
            monkeypatch.delenv(faults.FAIL_VAR, raising=False)
        else:
            monkeypatch.setenv(faults.FAIL_VAR, f"{op}:{step}")
        target = snaps[pick % len(snaps)] if snaps and op in ("vdi_revert", "vdi_delete") else x
        before = msr.records()
        try:
            if op in ("vdi_snapshot", "vdi_clone"):
                new = str(msr.call(op, vdi=x)["uuid"])
                snaps.append(new)
                content[new] = content[x]
            elif op == "vdi_revert" and target != x:
                msr.call(op, [x], vdi=target)
                content[x] = content[target]
            elif op == "vdi_delete" and target != x:
                msr.call(op, vdi=target)
                snaps.remove(target)
                del content[target]
            elif op == "vdi_resize":
                msr.call(op, [str((4 + n + 1) * MiB)], vdi=x)
        except SMFault as err:
            assert step is not None and "injected failure" in str(err), err
            # past its point of no return it completed; otherwise nothing changed
            _adopt(msr, op, before, msr.records(), x, target, snaps, content)
        monkeypatch.delenv(faults.FAIL_VAR, raising=False)
        assert _journal(msr) == [], (op, step)
        _check(msr, content)
        data = b"x%d" % (n + 1)
        msr.write(x, 0, data)
        content[x] = data
    msr.call("sm_gc_run")


def _adopt(msr: FileSRClient, op: str, before: dict, after: dict, x: str, target: str,
           snaps: list[str], content: dict[str, bytes]) -> None:
    """The model follows an operation that completed although it answered its failure."""
    if op in ("vdi_snapshot", "vdi_clone"):
        for new in [u for u, r in after.items() if u not in before and not r["hidden"]]:
            snaps.append(new)
            content[new] = content[x]
    elif op == "vdi_revert":  # done or not: x reads one or the other, never a mix
        now = msr.read(x, 0, len(content[x]))
        assert now in (content[x], content[target]), now
        content[x] = now
    elif op == "vdi_delete" and target not in after:
        snaps.remove(target)
        del content[target]


def _check(msr: FileSRClient, content: dict[str, bytes]) -> None:
    records = msr.records()
    visible = {u for u, r in records.items() if not r["hidden"]}
    assert visible == set(content), (sorted(visible), sorted(content))
    for u, r in records.items():
        path = Path(msr.location) / f"{u}.{r['vdi_type']}"
        assert path.exists(), u
        assert vhd.check(str(path)) == [], u
    for u, data in content.items():
        assert msr.read(u, 0, len(data)) == data, u
