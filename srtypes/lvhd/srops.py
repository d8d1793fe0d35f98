"""SR-level commands of the LVHD SR: create, delete, attach, detach, probe, scan, update."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sm.errors import MetadataError, SRExists, SRInUse, SRNotEmpty
from sm.records import SrRecord, VdiRecord

from .lvm import VG_PREFIX, LvmError
from .mgt import MGT_LV, MGT_SIZE, MgtError
from .repo import LvhdRepo

if TYPE_CHECKING:
    from sm.journal import SetAside

    from .mgt import MetaDoc

__all__ = ["attach", "create", "delete", "detach", "probe", "scan", "stats", "update"]

log = logging.getLogger(__name__)
IMAGE_LV = re.compile(r"^(VHD|LV)-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


def create(repo: LvhdRepo, allocation: str) -> None:
    lvm = repo.lvm
    if repo.lvm.find_sr_vgs():
        raise SRExists(f"the devices {','.join(repo.devices)} already hold an SR")
    lvm.pvcreate(repo.devices)
    try:
        lvm.vgcreate(repo.vg, repo.devices)
        lvm.lvcreate(repo.vg, MGT_LV, MGT_SIZE)
        created = datetime.now(UTC).replace(microsecond=0).isoformat()
        sr = SrRecord(uuid=repo.sr_uuid, type="lvhd", created=created,
                      sm_config={"allocation": allocation})
        with repo.mgt(writable=True) as store:
            store.init(sr)
    except BaseException:
        with contextlib.suppress(LvmError):
            lvm.vgremove(repo.vg)
        with contextlib.suppress(LvmError):
            lvm.pvremove(repo.devices)
        raise


def delete(repo: LvhdRepo) -> None:
    if not repo.exists():
        log.info("sr_delete: no VG %s (nothing to do)", repo.vg)
        return
    repo.check()  # a VG that is not this SR (no MGT, no valid record) is never removed
    if attached_marker(repo).exists() and any(repo.host_dir.glob("attached-vdi-*")):
        raise SRInUse("VDIs of this SR are attached on this host")
    with contextlib.suppress(MgtError):
        doc = repo.read()
        visible = [r.uuid for r in doc.vdis.values() if not r.hidden]
        if visible:
            raise SRNotEmpty(f"the SR still holds {len(visible)} VDI(s), e.g. {visible[0]}")
    known = {m.group(2) for lv in repo.lvm.lvs(repo.vg) if (m := IMAGE_LV.match(lv.name))}
    with contextlib.suppress(MgtError):
        stray = known - set(repo.read().vdis)
        if stray:
            raise SRNotEmpty(f"the SR holds images without records (sr_scan adopts them): "
                             f"{sorted(stray)[0]}")
    repo.lvm.vgremove(repo.vg)
    repo.lvm.pvremove(repo.devices)
    with contextlib.suppress(FileNotFoundError):
        attached_marker(repo).unlink()


def attached_marker(repo: LvhdRepo) -> Path:
    return repo.host_dir / "attached"


def attach(repo: LvhdRepo) -> None:
    """Check the VG and MGT, then reconcile records with the LVs (repairs an interrupted
    create/delete/inflate/deflate: see :func:`scan`)."""
    repo.check()
    repo.read()  # the SR is usable only with a readable MGT
    repo.host_dir.mkdir(parents=True, exist_ok=True)
    recover(repo)
    scan(repo)
    (repo.host_dir / "attached").touch()


def recover(repo: LvhdRepo) -> None:
    """Replay the journal entries left in MGT by interrupted operations. An entry whose replay
    fails is set aside (`set_aside`) and the next one is replayed: a replay that cannot make
    progress never blocks the SR (docs/lvhd-sr.md "Failure containment")."""
    # inflate/deflate entries first: a snapshot or revert being replayed may resize again
    entries = sorted(repo.read().journal.items(),
                     key=lambda kv: kv[1].get("op") not in ("inflate", "deflate"))
    for key, data in entries:
        op = data.get("op")
        log.info("sr_attach: replaying %s of %s", op, data.get("vdi", data.get("target")))
        if key not in repo.read().journal:
            continue  # finished by an earlier replay
        try:
            replay(repo, key, data)
        except Exception as err:
            set_aside(repo, key, err)


def replay(repo: LvhdRepo, key: str, data: Mapping[str, Any]) -> None:
    """Roll one journal entry forward (or back), by its op."""
    from . import provision

    op = data.get("op")
    if op in ("vdi_snapshot", "vdi_clone", "vdi_delete", "vdi_resize", "vdi_revert"):
        repo.chain.replay(key, data)
    elif op in ("inflate", "deflate"):
        provision.recover(repo, key, data)
    elif str(op).startswith("gc_"):  # the collector's steps (srtypes/lvhd/gc.py)
        __import__("srtypes.lvhd.gc", fromlist=["recover"]).recover(repo, key, data)
    else:
        log.warning("sr_attach: unknown journal entry %s (%s) left alone", key, op)


def set_aside(repo: LvhdRepo, key: str, error: BaseException) -> None:
    """Move journal entry ``key`` to MGT's ``failed`` with the error and the time: it is no
    longer replayed, and the VDIs it names are unusable until `sm sr repair`."""
    from sm.journal import SetAside

    with repo.transaction("set aside") as txn:
        data = txn.journal.pop(key, None)
        if data is None:
            return
        steps = data.get("steps", [])
        aside = SetAside.make(key, str(data.get("op")), data,
                              [str(s) for s in steps] if isinstance(steps, list) else [], error)
        txn.failed[key] = {**aside.to_dict(), "entry": data}
    log.error("journal entry %s (%s) set aside: replay failed: %s; VDIs %s unusable",
              key, aside.op, aside.error, ", ".join(aside.affected) or "none")


def unusable(repo: LvhdRepo, doc: MetaDoc | None = None) -> dict[str, SetAside]:
    """VDI uuid -> the set-aside journal entry that makes it unusable."""
    from sm.journal import SetAside

    failed = (doc or repo.read()).failed
    return {u: a for a in map(SetAside.from_dict, failed.values()) for u in a.affected}


def check_usable(repo: LvhdRepo, *uuids: str, doc: MetaDoc | None = None) -> None:
    """VDIUnavailable (46) if a set-aside journal entry makes one of the VDIs unusable."""
    doc = doc or repo.read()
    if not doc.failed:
        return
    bad = unusable(repo, doc)
    for uuid in uuids:
        if uuid in bad:
            from sm.journal import unusable_error

            raise unusable_error(uuid, bad[uuid], repo.sr_uuid)


def set_aside_entries(repo: LvhdRepo) -> list[SetAside]:
    """MGT's set-aside journal entries, oldest first."""
    from sm.journal import SetAside

    failed = repo.read().failed
    return sorted((SetAside.from_dict(v) for v in failed.values()), key=lambda a: a.time)


def retry(repo: LvhdRepo, key: str) -> bool:
    """Put set-aside entry ``key`` back into the journal and replay it (caller holds the chain
    lock): True if recovered; False if it failed again (set aside again)."""
    with repo.transaction("sr_repair") as txn:
        raw = txn.failed.pop(key, None)
        if raw is None or not isinstance(raw.get("entry"), dict):
            raise MetadataError(f"no set-aside journal entry {key}", details={"entry": key})
        data = raw["entry"]
        txn.journal[key] = data
    try:
        replay(repo, key, data)
    except Exception as err:
        set_aside(repo, key, err)
        return False
    return key not in repo.read().journal


def discard(repo: LvhdRepo, key: str) -> SetAside:
    """Forget set-aside entry ``key`` (its VDIs become usable as they are)."""
    from sm.journal import SetAside

    with repo.transaction("sr_repair") as txn:
        raw = txn.failed.pop(key, None)
        if raw is None:
            raise MetadataError(f"no set-aside journal entry {key}", details={"entry": key})
    return SetAside.from_dict(raw)


def detach(repo: LvhdRepo) -> None:
    busy = sorted(repo.host_dir.glob("attached-vdi-*"))
    if busy:
        raise SRInUse(f"{len(busy)} VDI(s) of this SR are attached on this host")
    with contextlib.suppress(FileNotFoundError):
        (repo.host_dir / "attached").unlink()


def probe(repo: LvhdRepo) -> str:
    """``<SRlist>`` of the SRs (VGs ``VG_XenStorage-<uuid>``) on the devices."""
    uuids = sorted(vg.name[len(VG_PREFIX):] for vg in repo.lvm.find_sr_vgs())
    if not uuids:
        return '<?xml version="1.0" ?>\n<SRlist/>\n'
    body = "".join(f"\t<SR>\n\t\t<UUID>{u}</UUID>\n\t</SR>\n" for u in uuids)
    return f'<?xml version="1.0" ?>\n<SRlist>\n{body}</SRlist>\n'


def scan(repo: LvhdRepo) -> dict[str, str]:
    """Records follow the LVs: an image LV without a record is adopted (VHD header facts),
    a record whose LV is gone is dropped, physical utilisation is the LV size. Returns the
    image LVs it could not adopt (name -> problem: logged and skipped, never a failure)."""
    damaged: dict[str, str] = {}

    repo.check()
    lvs = {lv.name: lv for lv in repo.lvm.lvs(repo.vg)}
    with repo.transaction("sr_scan") as doc:
        held = unusable(repo, doc) if doc.failed else {}  # left as they are until repaired
        for uuid, rec in list(doc.vdis.items()):
            if uuid in held:
                continue
            lv = lvs.get(f"{'LV' if rec.vdi_type == 'raw' else 'VHD'}-{uuid}")
            if lv is None:
                log.warning("sr_scan: VDI %s has no LV; record dropped", uuid)
                del doc.vdis[uuid]
            elif rec.physical_utilisation != lv.size:
                doc.vdis[uuid] = rec.replace(physical_utilisation=lv.size)
        for name, lv in lvs.items():
            m = IMAGE_LV.match(name)
            if m is None or m.group(2) in doc.vdis or m.group(2) in held:
                continue
            adopted = adopt_record(repo, name, lv.size, damaged)
            if adopted is not None:
                doc.vdis[adopted.uuid] = adopted
    return damaged


def adopt_record(repo: LvhdRepo, name: str, lv_size: int,
                 damaged: dict[str, str] | None = None) -> VdiRecord | None:
    """A record for image LV ``name`` from what the image says (None: not a readable VHD; the
    problem goes into ``damaged``)."""
    from sm import vhd
    from sm.chain.records import with_parent

    m = IMAGE_LV.match(name)
    if m is None:
        return None
    uuid, kind = m.group(2), m.group(1)
    if kind == "LV":
        return VdiRecord(uuid=uuid, location=uuid, vdi_type="raw", virtual_size=lv_size,
                         physical_utilisation=lv_size, sm_config={"vdi_type": "raw"})
    try:
        info = vhd.info(repo.storage.path(name), storage=repo.storage)
    except (vhd.VhdError, OSError) as err:
        log.warning("sr_scan: %s is not a readable VHD: %s", name, err)
        if damaged is not None:
            damaged[name] = str(err)
        return None
    parent = str(info.parent_uuid) if info.parent_uuid else ""
    rec = VdiRecord(uuid=uuid, location=uuid, virtual_size=info.virtual_size,
                    physical_utilisation=lv_size, hidden=info.hidden,
                    read_only=info.hidden, managed=not info.hidden,
                    sm_config={"vdi_type": "vhd"})
    return with_parent(rec, parent)


def stats(repo: LvhdRepo) -> dict[str, str]:
    vg = repo.lvm.vgs(repo.vg)
    doc = repo.read()
    virtual = sum(r.virtual_size for r in doc.vdis.values() if not r.hidden)
    return {"physical_size": str(vg.size), "physical_utilisation": str(vg.size - vg.free),
            "free_space": str(vg.free), "virtual_allocation": str(virtual),
            "allocation": repo.allocation(doc)}


def update(repo: LvhdRepo) -> None:
    repo.check()
    values = stats(repo)
    with repo.transaction("sr_update") as doc:
        doc.sr = doc.sr.replace(sm_config={**doc.sr.sm_config, **values})
