"""Copy and move a VDI (optionally with its snapshot tree) to another SR of any type.

Only allocated data travels: the source SR says where each image of a chain holds data
(`sm_vdi_allocation`, `sm.extents`); for the first state copied every allocated block is read
and the all-zero chunks among them are skipped (the new VDI reads zeros there already). An SR
type without the extension is read whole, zero chunks still skipped. What each state rewrites
is planned by `sm.api.copyplan`.

With snapshots, the tree is rebuilt: the destination VDI is written with the content of each
snapshot in turn (tree order: a parent before its children), snapshotted (`vdi_snapshot`), and
finally given the VDI's own content. Between two states only the ranges of the images the two
chains do not share are rewritten (zeros included). Each new snapshot joins the new VDI's tree
under the copy of its source parent with the same name, description and creation time; the
current snapshot is carried over. New uuids everywhere (the destination SR makes them).

Journal (state table `journal`, op `vdi-copy`, crash points `api.copy.<step>`):

    begun    intent {source, dest uuid (chosen before vdi_create), created snapshots}
    reading  a source volume is about to be attached (its ref, unless an export serves it);
             crash point `api.copy.chunk` after each chunk written
    read     it is detached again
    created  each snapshot made at the destination, recorded when `vdi_snapshot` returns
    copied   (move only) the copy is complete: the source is deleted next

A failure before `copied` (a destination SR too small, a read error, ...) deletes everything
made at the destination and leaves the source untouched; so does the repair after a crash
(it also detaches the source volume the dead process held, and deletes a snapshot of the
destination VDI that a crash inside `vdi_snapshot` left unrecorded). After `copied` the
repair rolls forward: delete the source and its snapshots.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sm.errors import InvalidArg, SMError, SRNoSpace, Unimplemented, VDIMissing
from sm.faults import crash_point
from sm.vhd.errors import VhdError, VhdNoSpaceError

from . import checks, exports, names, trees
from .copyplan import Step, plan
from .data import open_attached
from .models import VDI, _plain
from .present import present
from .state import JournalEntry, Key, SnapshotNode

if TYPE_CHECKING:
    from .client import SRClient
    from .config import SrConfig
    from .manager import StorageManager

__all__ = ["OP", "CopyResult", "copy", "recover"]

OP = "vdi-copy"
CHUNK = 2 << 20
log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CopyResult:
    vdi: VDI
    """The new VDI on the destination SR."""
    source: str
    source_sr: str
    """Name of the source SR."""
    dest_sr: str
    """Name of the destination SR."""
    snapshots: tuple[tuple[str, str], ...]
    """(source snapshot uuid, new snapshot uuid), in the order they were made."""
    copied: int
    """Bytes read from the source and written to the destination."""
    moved: bool

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


def _flag(rec: dict[str, Any], key: str) -> bool:
    return rec.get(key) is True or str(rec.get(key)).lower() == "true"


def copy(mgr: StorageManager, src_cfg: SrConfig, ref: str, dst_cfg: SrConfig, *,
         with_snapshots: bool, name: str | None, move: bool,
         progress: Progress | None) -> CopyResult:
    """Called with the API lock held (`StorageManager._locked`)."""
    src, dst = mgr._client(src_cfg), mgr._client(dst_cfg)
    vdis = mgr.vdis(src_cfg.name, hidden=True)
    vdi = mgr._find(vdis, ref)
    if vdi.hidden:
        raise InvalidArg(f"{vdi.uuid} is a hidden snapshot base")
    if vdi.is_a_snapshot and (move or with_snapshots):
        raise InvalidArg(f"{vdi.uuid} is a snapshot: copy it alone, or "
                         f"{'move' if move else 'copy'} {vdi.snapshot_of} with its snapshots")
    if move:
        if src_cfg.uuid == dst_cfg.uuid:
            raise InvalidArg(f"{vdi.uuid} is already on SR {dst_cfg.name}")
        owners = mgr.vm_state.disk_owners(src_cfg.uuid, vdi.uuid)
        if owners:
            raise InvalidArg(f"{vdi.uuid} is a disk of VM {owners[0].vm}: remove it from the "
                             "VM first (sm vm remove-disk), or copy it")
        if exports.find(mgr.state, src_cfg.uuid, vdi.uuid) is not None:
            raise InvalidArg(f"{vdi.uuid} is attached (sm vdi attach): detach it first")
    steps = plan(mgr, src, vdis, vdi, with_snapshots)
    total = sum(length for s in steps for _, length in s.extents)
    _check_space(mgr, dst_cfg, total)
    label = vdi.name_label if name is None else checks.name("VDI", name, empty=True)
    dest = str(uuidlib.uuid4())
    entry = mgr.state.journal_begin(OP, dst_cfg.uuid, dest=dest, move=move,
                                    source=[src_cfg.uuid, vdi.uuid], created=[],
                                    with_snapshots=with_snapshots)
    crash_point("api.copy.begun")
    made: list[tuple[str, str]] = []
    done = 0
    try:
        dest_ref = dst.vdi_create(steps[0].vdi.virtual_size, label, vdi.name_description,
                                  vdi_uuid=dest)
        if dest_ref[0] != dest:  # an SR type that picks its own uuids
            dest = dest_ref[0]
            mgr.state.journal_step(entry, "begun", dest=dest)
        size = steps[0].vdi.virtual_size
        mapped: dict[Key, Key] = {}
        for step in steps:
            if step.vdi.virtual_size > size:
                dest_ref = dst.vdi_resize(dest_ref, step.vdi.virtual_size)
                size = step.vdi.virtual_size
            done = _transfer(mgr, entry, src, step, dst, dest_ref, done, total, progress)
            if step.node is None:
                continue
            new = dst.vdi_snapshot(dest_ref)
            made.append((step.vdi.uuid, new[0]))
            mgr.state.journal_step(entry, "created", created=[m[1] for m in made])
            crash_point("api.copy.created")
            key = (dst_cfg.uuid, new[0])
            mapped[step.node.key] = key
            mgr.state.add_snapshot(SnapshotNode(
                dst_cfg.uuid, new[0], dst_cfg.uuid, dest,
                mapped.get(step.parent) if step.parent else None, step.node.name,
                step.node.description, step.node.created))
            if step.vdi.name_label != label or step.vdi.name_description != vdi.name_description:
                with contextlib.suppress(Unimplemented):
                    dst.call("sm_vdi_set_names",
                             [step.vdi.name_label, step.vdi.name_description], vdi=new)
        _, current = mgr.state.tree((vdi.sr, vdi.uuid))
        mgr.state.set_current((dst_cfg.uuid, dest), mapped.get(current) if current else None)
        if move:
            mgr.state.journal_step(entry, "copied")
            crash_point("api.copy.copied")
            _delete_source_vdi(src, vdi)
    except BaseException:
        _rollback(mgr, dst, _entry(mgr, entry))
        raise
    if move:
        _finish_move(mgr, src, src_cfg, vdi, with_snapshots, vdis)
    mgr.state.journal_done(entry)
    dst_vdis = present(mgr.state, dst_cfg.uuid, dst.records())
    names.warn_duplicates(dst_vdis, label, dest, dst_cfg.name)
    new_vdi = _find(dst_vdis, dst_cfg, dest)
    return CopyResult(new_vdi, vdi.uuid, src_cfg.name, dst_cfg.name, tuple(made), done, move)


def _check_space(mgr: StorageManager, cfg: SrConfig, total: int) -> None:
    """SRNoSpace up front when the destination says it has less free space than the data
    (plus VHD metadata): a full SR is worse at undoing than one that was never filled."""
    stats = mgr.sr_stats(cfg.name)
    free = stats.get("free_space")
    need = total + total // 64 + (4 << 20)
    if free is not None and stats.get("physical_size") and need > free:  # 0: not known
        raise SRNoSpace(f"SR {cfg.name} has {free} bytes free; the copy needs about {need}")


def _find(vdis: list[VDI], cfg: SrConfig, uuid: str) -> VDI:
    found = [v for v in vdis if v.uuid == uuid]
    if not found:
        raise VDIMissing(f"the copy {uuid} vanished from SR {cfg.name}")
    return found[0]


def _transfer(mgr: StorageManager, entry: int, src: SRClient, step: Step, dst: SRClient,
              dest_ref: tuple[str, str], done: int, total: int,
              progress: Progress | None) -> int:
    """Copy `step.extents` of `step.vdi` into the destination VDI; bytes done so far. The
    journal names the source volume while this process holds it attached, so a repair after
    a crash can detach it (an export of `sm vdi attach` is used as it is, and left alone)."""
    zero = bytes(CHUNK)
    dest_vdi = VDI(dst.sr.uuid, dest_ref[0], dest_ref[1], "", "", 0, 0)
    exported = exports.find(mgr.state, step.vdi.sr, step.vdi.uuid) is not None
    mgr.state.journal_step(entry, "reading", reading=None if exported else list(step.vdi.ref))
    try:
        with exports.attached(mgr.state, src, step.vdi, False) as a_in, \
                open_attached(a_in, False, src, step.vdi.ref) as disk_in, \
                exports.attached(mgr.state, dst, dest_vdi, True) as a_out, \
                open_attached(a_out, True, dst, dest_ref) as disk_out:
            for off, length in step.extents:
                end = off + length
                while off < end:
                    n = min(CHUNK, end - off)
                    data = disk_in.read(off, n)
                    if not (step.fresh and data == zero[:n]):
                        disk_out.write(off, data)
                        crash_point("api.copy.chunk")
                    off += n
                    done += n
                    if progress:
                        progress(done, total)
    except (OSError, VhdError) as err:
        raise _copy_error(dst, err) from err
    mgr.state.journal_step(entry, "read", reading=None)
    return done


def _copy_error(dst: SRClient, err: Exception) -> SMError:
    full = isinstance(err, VhdNoSpaceError) or getattr(err, "errno", None) == errno.ENOSPC
    if full:
        return SRNoSpace(f"SR {dst.sr.name} is full: {err}")
    return SMError(f"copying to SR {dst.sr.name}: {err}")


def _delete_source_vdi(src: SRClient, vdi: VDI) -> None:
    try:
        src.vdi_delete(vdi.ref)
    except VDIMissing:
        pass


def _finish_move(mgr: StorageManager, src: SRClient, src_cfg: SrConfig, vdi: VDI,
                 with_snapshots: bool, vdis: list[VDI]) -> None:
    """After the VDI itself is gone: its snapshots (if moved too) and its state."""
    if with_snapshots:
        try:
            trees.delete_all(mgr.state, src, vdis, vdi)
        except SMError as err:
            log.warning("moved %s; deleting its snapshots on SR %s failed: %s", vdi.uuid,
                        src_cfg.name, err)
    mgr.state.forget_vdi(src_cfg.uuid, vdi.uuid)
    exports.forget(mgr.state, src_cfg.uuid, vdi.uuid)


def _entry(mgr: StorageManager, entry_id: int) -> JournalEntry:
    return next(e for e in mgr.state.journal() if e.id == entry_id)


def _rollback(mgr: StorageManager, dst: SRClient, entry: JournalEntry) -> None:
    """Delete what the copy made at the destination (snapshots, then the VDI)."""
    d = entry.data
    dest = str(d["dest"])
    try:
        records = dst.records()
    except SMError as err:
        log.warning("undoing copy %s: SR %s unreadable (%s); VDI %s may be left there",
                    entry.id, dst.sr.name, err, dest)
        records = []
    doomed = [r for r in records if str(r["uuid"]) in set(d["created"])
              or (_flag(r, "is_a_snapshot") and str(r.get("snapshot_of")) == dest)]
    doomed += [r for r in records if str(r["uuid"]) == dest]
    for rec in doomed:
        ref = (str(rec["uuid"]), str(rec["location"]))
        with contextlib.suppress(SMError):
            dst.vdi_detach(ref)
        try:
            dst.vdi_delete(ref)
        except VDIMissing:
            pass
        except SMError as err:
            log.warning("undoing copy %s: cannot delete %s: %s", entry.id, ref[0], err)
    mgr.state.forget_vdi(dst.sr.uuid, dest)
    mgr.state.journal_done(entry.id)


def recover(mgr: StorageManager, entry: JournalEntry) -> None:
    """Repair an interrupted copy or move (called with the API lock held). Whatever cannot be
    repaired (an SR gone or unreachable) is logged and the entry dropped: a copy's journal
    never blocks other commands; the worst left is an extra copy, never a lost one."""
    try:
        _recover(mgr, entry)
    except SMError as err:
        log.warning("dropping journal entry %s (copy of %s): %s", entry.id,
                    entry.data["source"][1], err)
        mgr.state.journal_done(entry.id)


def _recover(mgr: StorageManager, entry: JournalEntry) -> None:
    d = entry.data
    dst_cfg = next((c for c in mgr._configs() if c.uuid == entry.sr), None)
    src_cfg = next((c for c in mgr._configs() if c.uuid == d["source"][0]), None)
    if entry.step != "copied":
        if dst_cfg is None:
            log.warning("dropping journal entry %s: SR %s is gone", entry.id, entry.sr)
            mgr.state.journal_done(entry.id)
            return
        log.warning("undoing an interrupted copy of %s", d["source"][1])
        if d.get("reading") and src_cfg is not None:  # attached by the process that died
            with contextlib.suppress(SMError):
                mgr._client(src_cfg).vdi_detach((d["reading"][0], d["reading"][1]))
        _rollback(mgr, mgr._client(dst_cfg), entry)
        return
    if src_cfg is not None:
        log.warning("finishing an interrupted move of %s", d["source"][1])
        src = mgr._client(src_cfg)
        vdis = present(mgr.state, src_cfg.uuid, src.records())
        vdi = next((v for v in vdis if v.uuid == d["source"][1]), None)
        if vdi is not None:
            try:
                _delete_source_vdi(src, vdi)
            except SMError as err:
                log.warning("move of %s: the copy is complete but the source cannot be "
                            "deleted (%s); both stay", vdi.uuid, err)
            else:
                _finish_move(mgr, src, src_cfg, vdi, bool(d.get("with_snapshots")), vdis)
        else:
            mgr.state.forget_vdi(src_cfg.uuid, d["source"][1])
    mgr.state.journal_done(entry.id)
