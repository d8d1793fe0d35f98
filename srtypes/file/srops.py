"""SR-level commands of the File SR: create, delete, attach, detach, probe, update."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sm.errors import (
    FileSRCreate,
    FileSRDelete,
    FileSRRmDir,
    SRExists,
    SRInUse,
    SRNotEmpty,
    SRUnavailable,
)

from .layout import IMAGE_NAME

if TYPE_CHECKING:

    from .layout import SRLayout
    from .repo import FileRepo

__all__ = ["attach", "create", "delete", "detach", "probe", "update"]

log = logging.getLogger(__name__)


def make_dirs(layout: SRLayout) -> None:
    """The SR's own directories under `<location>/.sm` (locks, journal; the record store makes
    its own): made by `sr_create`, and by `sr_attach` for an SR an earlier version made, whose
    journal directory appeared only with its first journaled operation. Nothing else creates
    them, so no other command can make a directory look like an SR (docs/file-sr.md)."""
    from sm.locking import init_sr_locks

    init_sr_locks(layout.location)
    layout.journal_dir.mkdir(exist_ok=True)
    from sm.journal import Journal

    Journal(layout.journal_dir).make_reserve()


def create(layout: SRLayout, sr_uuid: str) -> None:
    from sm.locking import sr_lock
    from sm.records import RecordStore, SrRecord

    loc = layout.location
    try:
        if loc.exists():
            if not loc.is_dir():
                raise FileSRCreate(f"{loc} exists and is not a directory")
            if layout.has_sr():
                raise SRExists(f"{loc} already holds an SR")
            if any(name != ".sm" for name in os.listdir(loc)):
                raise FileSRCreate(f"{loc} is not empty")
        else:
            try:
                loc.mkdir(mode=0o755)
            except FileExistsError as err:
                raise SRExists(f"{loc} appeared while creating the SR") from err
        make_dirs(layout)
        with sr_lock(loc, purpose="sr_create"):
            if layout.has_sr():
                raise SRExists(f"{loc} already holds an SR")
            store = RecordStore(layout.meta, create=True)
            created = datetime.now(UTC).replace(microsecond=0).isoformat()
            store.put_sr(SrRecord(uuid=sr_uuid, type="file", created=created))
            store.build_index()
    except OSError as err:
        raise FileSRCreate(f"cannot create the SR in {loc}: {err}") from err


def delete(repo: FileRepo) -> None:
    lay = repo.layout
    if not lay.location.exists():
        log.info("sr_delete: %s does not exist (nothing to do)", lay.location)
        return
    repo.check()
    from .gc import abort

    with abort(repo, reason="sr_delete"), repo.chain_lock("sr_delete"):
        records = repo.records.all()
        visible = [r.uuid for r in records if not r.hidden]
        if visible:
            raise SRNotEmpty(f"the SR still holds {len(visible)} VDI(s), e.g. {visible[0]}")
        known = {r.uuid for r in records}
        # a link under an image name is not the SR's (scan never adopts one): it stays
        ours = [n for n in os.listdir(lay.location) if not os.path.islink(lay.location / n)]
        stray = [n for n in ours if (m := IMAGE_NAME.match(n)) and m.group(1) not in known]
        if stray:
            raise SRNotEmpty(f"the SR holds images without records (sr_scan adopts them): "
                             f"{stray[0]}")
        if repo.attached_vdis():
            raise SRInUse("VDIs of this SR are attached on this host")
        for name in ours:
            if IMAGE_NAME.match(name) or name.startswith(".tmp-") or name.endswith(
                    ".revert.vhd"):
                try:
                    os.unlink(lay.location / name)
                except FileNotFoundError:
                    continue
                except OSError as err:
                    raise FileSRDelete(f"cannot remove {name}: {err}") from err
    try:
        shutil.rmtree(lay.meta)
    except OSError as err:
        raise FileSRDelete(f"cannot remove {lay.meta}: {err}") from err
    shutil.rmtree(lay.host_dir, ignore_errors=True)
    try:
        lay.location.rmdir()
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileSRRmDir(f"cannot remove {lay.location}: {err}") from err
        log.info("sr_delete: %s keeps files that are not the SR's", lay.location)


def attach(repo: FileRepo) -> None:
    repo.check()
    make_dirs(repo.layout)  # an SR from an earlier version: see make_dirs
    with repo.chain_lock("sr_attach"):
        repo.records.build_index()  # an SR from before the parent index gets it once
    repo.layout.host_dir.mkdir(parents=True, exist_ok=True)
    repo.layout.attached_marker.touch()


def detach(repo: FileRepo) -> None:
    busy = repo.attached_vdis()
    if busy:
        raise SRInUse(f"{len(busy)} VDI(s) of this SR are attached on this host, e.g. {busy[0]}")
    from .gc import abort

    with abort(repo, reason="sr_detach"), contextlib.suppress(FileNotFoundError):
        repo.layout.attached_marker.unlink()


def probe(layout: SRLayout) -> str:
    """`<SRlist>` holding the SR found at the location (empty if none)."""
    uuid = None
    if layout.has_sr():
        from sm.records import RecordStore

        with contextlib.suppress(Exception):
            found = RecordStore(layout.meta).find_sr()
            uuid = found.uuid if found is not None else None
    if uuid is None:
        return '<?xml version="1.0" ?>\n<SRlist/>\n'
    return ('<?xml version="1.0" ?>\n<SRlist>\n\t<SR>\n'
            f"\t\t<UUID>{uuid}</UUID>\n\t</SR>\n</SRlist>\n")


def update(repo: FileRepo) -> None:
    from .scan import sr_stats

    repo.check()
    stats = sr_stats(repo)
    with repo.records.transaction(purpose="sr_update") as txn:
        sr = txn.sr()
        if sr is None:
            raise SRUnavailable("the SR record vanished")
        txn.put_sr(sr.replace(sm_config={**sr.sm_config, **stats}))


