"""`sr_scan` (reconcile records with the images present) and `sr_update` (SR statistics).

Scan is stat-based: one directory listing, one stat per image, one read of the records. Only
images without a record are opened (adoption). A record whose image vanished is forgotten.
Hidden bases without children are marked `gc=garbage` (and unmarked if a child appears).
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING, Any

from sm.chain.records import children_map, is_garbage, with_gc_mark, with_parent
from sm.errors import SMError, SRScan

from .layout import IMAGE_NAME

if TYPE_CHECKING:
    from sm.records import VdiRecord

    from .layout import SRLayout
    from .repo import FileRepo

__all__ = ["adopt_record", "image_facts", "scan", "sr_stats"]

log = logging.getLogger(__name__)


def _physical(st: os.stat_result, ext: str) -> int:
    return st.st_blocks * 512 if ext == "raw" else st.st_size


def image_facts(path: str, ext: str) -> dict[str, Any]:
    """virtual_size, physical_utilisation, hidden, parent_file (basename or None)."""
    st = os.stat(path)
    if ext == "raw":
        return {"virtual_size": st.st_size, "physical_utilisation": _physical(st, ext),
                "hidden": False, "parent_file": None}
    from sm import vhd

    from .confine import SRStorage

    info = vhd.info(path, storage=SRStorage(os.path.dirname(path)))
    if info.parent_uuid is not None and info.parent_path is None:  # never followed outside
        raise vhd.VhdChainError("its parent is not an image in the SR (a parent locator "
                                "pointing outside the SR is not followed)", path=path)
    parent = info.parent_path or info.parent_name
    return {"virtual_size": info.virtual_size, "physical_utilisation": _physical(st, ext),
            "hidden": info.hidden, "parent_file": os.path.basename(parent) if parent else None}


def adopt_record(layout: SRLayout, uuid: str, ext: str) -> VdiRecord:
    """A record for an image found without one (administrator copy, vdi_introduce)."""
    from sm.records import VdiRecord

    from .edge import engine_errors
    from .layout import is_uuid

    with engine_errors(SRScan, f"reading {uuid}.{ext}"):
        facts = image_facts(layout.image(uuid, ext), ext)
    parent = ""
    if facts["parent_file"]:
        match = IMAGE_NAME.match(facts["parent_file"])
        if match and is_uuid(match.group(1)) and match.group(1) != uuid:
            parent = match.group(1)
    hidden = bool(facts["hidden"])
    record = VdiRecord(
        uuid=uuid, location=uuid, name_label="base copy" if hidden else "",
        vdi_type=ext, hidden=hidden, managed=not hidden, read_only=hidden,
        virtual_size=facts["virtual_size"], physical_utilisation=facts["physical_utilisation"],
    )
    return with_parent(record, parent)


def _images(location: str, refused: dict[str, str] | None = None
            ) -> dict[str, tuple[str, os.stat_result]]:
    """The image files by uuid; entries under an image name that are not regular files (a
    link is never adopted) go into `refused` (name -> why)."""
    found: dict[str, tuple[str, os.stat_result]] = {}
    with os.scandir(location) as entries:
        for entry in entries:
            match = IMAGE_NAME.match(entry.name)
            if not match:
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    log.warning("sr_scan: skipping %s: not a regular file (a symbolic link is "
                                "never adopted)", entry.name)
                    if refused is not None:
                        refused[entry.name] = ("not a regular file (a symbolic link is never "
                                               "adopted: sm uses only files inside the SR)")
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            uuid, ext = match.group(1), match.group(2)
            if uuid in found and found[uuid][0] == "vhd":
                continue  # both <uuid>.vhd and <uuid>.raw: the VHD wins
            found[uuid] = (ext, st)
    return found


def scan(repo: FileRepo) -> dict[str, Any]:
    """Reconcile under the chain lock; returns {"adopted", "forgotten", "garbage"} uuids,
    "damaged" {uuid: problem} of the images without a record it could not adopt, and
    "refused" {name: why} of entries under image names that are not regular files (all
    logged and skipped: neither fails the scan)."""
    lay = repo.layout
    with repo.chain_lock("sr_scan"):
        for name in lay.sweep_scratch():  # left by a killed command (none is running now)
            log.warning("sr_scan: removed scratch file %s of an interrupted command", name)
        repo.records.build_index()
        refused: dict[str, str] = {}
        images = _images(str(lay.location), refused)
        records = {r.uuid: r for r in repo.records.all()}
        held = repo.unusable()  # images a set-aside journal entry names: left as they are
        final: dict[str, VdiRecord] = {u: r for u, r in records.items() if u in held}
        changed: set[str] = set()
        adopted: list[str] = []
        forgotten: list[str] = []
        damaged: dict[str, str] = {}
        for uuid, record in records.items():
            if uuid in held:
                continue
            found = images.get(uuid)
            if found is None or found[0] != record.vdi_type:
                forgotten.append(uuid)
                continue
            phys = _physical(found[1], record.vdi_type)
            if phys != record.physical_utilisation:
                record = record.replace(physical_utilisation=phys)
                changed.add(uuid)
            final[uuid] = record
        for uuid, (ext, _st) in sorted(images.items()):
            if uuid in final or uuid in held:
                continue
            try:
                final[uuid] = adopt_record(lay, uuid, ext)
            except SMError as err:  # unreadable image: leave it alone, keep scanning
                log.warning("sr_scan: not adopting %s.%s: %s", uuid, ext, err)
                damaged[uuid] = str(err)
                continue
            adopted.append(uuid)
            changed.add(uuid)
        children = children_map(final.values())
        garbage = []
        for uuid, record in final.items():
            marked = with_gc_mark(record, is_garbage(record, children))
            if marked is not record:
                final[uuid] = marked
                changed.add(uuid)
            if is_garbage(marked, children):
                garbage.append(uuid)
        if changed or forgotten:
            with repo.records.transaction(purpose="sr_scan") as txn:
                for uuid in forgotten:
                    if uuid not in final:
                        txn.delete(uuid, missing_ok=True)
                for uuid in sorted(changed):
                    txn.put(final[uuid])
    for uuid in adopted:
        log.info("sr_scan: adopted %s", uuid)
    for uuid in forgotten:
        if uuid not in final:
            log.info("sr_scan: forgot %s (its image is gone)", uuid)
    return {"adopted": adopted, "forgotten": [u for u in forgotten if u not in final],
            "garbage": sorted(garbage), "damaged": damaged, "refused": refused}


def sr_stats(repo: FileRepo) -> dict[str, str]:
    """physical_size / physical_utilisation of the file system, the SR's images' bytes and the
    virtual allocation of its visible VDIs (decimal strings, for the SR record's sm_config)."""
    lay = repo.layout
    usage = shutil.disk_usage(lay.location)
    images = _images(str(lay.location))
    used = sum(_physical(st, ext) for ext, st in images.values())
    virtual = sum(r.virtual_size for r in repo.records.all() if not r.hidden)
    return {"physical_size": str(usage.total), "physical_utilisation": str(usage.used),
            "free_space": str(usage.free), "images_utilisation": str(used),
            "virtual_allocation": str(virtual)}
