"""Attach and detach of an LVHD VDI: a writable VHD leaf is inflated, a thin one deflated
when detached (`.provision`). create, delete and resize are the chain core's
(`sm.chain.vdiops`, `sm.chain.resize`); `inflate`, `deflate`, `leaf_target` and `resize_lv`
are `.provision`'s, importable here until their users move.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from sm.errors import VDIMissing, VDIUnavailable

from .provision import deflate, inflate, leaf_target, resize_lv
from .repo import LvhdRepo

if TYPE_CHECKING:
    from sm.records import VdiRecord

__all__ = ["attach", "deflate", "detach", "inflate", "leaf_target", "resize_lv"]

log = logging.getLogger(__name__)


def _get(repo: LvhdRepo, uuid: str) -> VdiRecord:
    rec = repo.read().vdis.get(uuid)
    if rec is None:
        raise VDIMissing(f"no VDI {uuid} in SR {repo.sr_uuid}")
    return rec


def attach(repo: LvhdRepo, uuid: str, writable: bool) -> str:
    """Inflate a writable VHD leaf, mark it attached; return its image path."""
    from srtypes.file.edge import require_sound

    from .srops import check_usable

    rec = _get(repo, uuid)
    check_usable(repo, uuid)
    if writable and (rec.read_only or rec.is_a_snapshot):
        raise VDIUnavailable(f"VDI {uuid} is read-only (a snapshot or read-only VDI); "
                             "attach it read-only")
    if writable and rec.vdi_type == "vhd" and not rec.hidden:
        require_sound(repo.path(rec), storage=repo.storage)  # damaged: 46, nothing inflated
        inflate(repo, rec)
    repo.host_dir.mkdir(parents=True, exist_ok=True)
    (repo.host_dir / f"attached-vdi-{uuid}").write_text("rw" if writable else "ro")
    return repo.path(rec)


def detach(repo: LvhdRepo, uuid: str) -> None:
    """Deflate a thin VHD leaf to its physical size, unmark it."""
    marker = repo.host_dir / f"attached-vdi-{uuid}"
    rec = repo.read().vdis.get(uuid)
    if rec is not None and rec.vdi_type == "vhd" and repo.allocation(repo.read()) == "thin":
        from sm import vhd

        try:
            deflate(repo, rec)
        except vhd.VhdError as err:  # a damaged image keeps its LV's size; still detached
            log.warning("vdi_detach: %s not deflated: %s", uuid, err)
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()
