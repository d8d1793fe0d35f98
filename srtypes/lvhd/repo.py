"""One LVHD SR as the handlers see it: its devices, VG, lvm executor, image Storage and MGT.

Names: VG ``VG_XenStorage-<sr uuid>``, LVs ``MGT``, ``VHD-<uuid>`` (VHD images),
``LV-<uuid>`` (raw). The lvm configuration is written under
``<run_dir>/lvhd/<sr uuid>/lvm`` with a filter that accepts exactly the SR's devices, and the
SR's lock files live next to it (an LV cannot hold flock).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sm.errors import ConfigDeviceMissing, InvalidArg, SRNoSpace, SRUnavailable
from sm.executor import Executor
from sm.records import VdiRecord

from .lvm import VG_PREFIX, Lvm, write_config
from .mgt import MGT_LV, MetaDoc, MgtStore
from .storage import LvStorage

if TYPE_CHECKING:
    from .chainsr import LvhdChain

__all__ = ["ALLOCATIONS", "LvhdRepo", "devices_from_config", "full_vhd_size", "grown_size",
           "lv_name"]

ALLOCATIONS = ("thin", "thick")
BLOCK = 2 * 1024 * 1024
SECTOR = 512


def devices_from_config(device_config: Mapping[str, str]) -> list[str]:
    raw = device_config.get("device", "")
    devices = [d.strip() for d in raw.split(",") if d.strip()]
    if not devices:
        raise ConfigDeviceMissing("device-config:device is required (comma-separated devices)")
    for dev in devices:
        if not dev.startswith("/"):
            raise InvalidArg(f"device {dev[:80]!r} is not an absolute path")
    return devices


def lv_name(uuid: str, vdi_type: str) -> str:
    return f"{'LV' if vdi_type == 'raw' else 'VHD'}-{uuid}"


def vhd_lv(uuid: str) -> str:
    """The LV of a VHD VDI (`VHD-<uuid>`)."""
    return lv_name(uuid, "vhd")


def metadata_size(virtual_size: int) -> int:
    """Bytes a dynamic/differencing VHD of ``virtual_size`` needs besides its data blocks:
    footer copy, header, BAT, batmap, three parent locators, footer (as sm.vhd.ops.create)."""
    from sm.vhd.layout import bat_bytes, batmap_sectors

    entries = -(-virtual_size // BLOCK)
    return (512 + 1024 + bat_bytes(entries) + SECTOR + batmap_sectors(entries) * SECTOR
            + 3 * 512 + SECTOR)


ALIGN = 4096
"""The engine starts every block's data 4 KiB aligned: a block takes up to BLOCK + ALIGN."""


def full_vhd_size(virtual_size: int) -> int:
    """The largest a new VHD of ``virtual_size`` can grow to: metadata + every block with its
    bitmap and alignment padding."""
    entries = -(-virtual_size // BLOCK)
    return metadata_size(virtual_size) + ALIGN + entries * (BLOCK + ALIGN)


def grown_size(physical: int, virtual_size: int, allocated: int) -> int:
    """The largest an existing VHD (``physical`` bytes, ``allocated`` blocks) of
    ``virtual_size`` can grow to (its BAT may have been moved to the end by a resize)."""
    entries = -(-virtual_size // BLOCK)
    return physical + ALIGN + max(0, entries - allocated) * (BLOCK + ALIGN)


class LvhdRepo:
    def __init__(self, sr_uuid: str, device_config: Mapping[str, str], executor: Executor,
                 run_dir: Path, dev_root: str = "/dev") -> None:
        self.sr_uuid = sr_uuid
        self.device_config = device_config
        self.devices: Sequence[str] = devices_from_config(device_config)
        self.executor = executor
        key = hashlib.sha1(",".join(self.devices).encode()).hexdigest()[:12]
        self.host_dir = run_dir / "lvhd" / (sr_uuid or f"probe-{key}")
        self.vg = VG_PREFIX + sr_uuid
        self.dev_root = dev_root

    @cached_property
    def lvm(self) -> Lvm:
        conf = self.host_dir / "lvm"
        write_config(conf, list(self.devices))
        return Lvm(self.executor, conf, devices=list(self.devices))

    @cached_property
    def chain(self) -> LvhdChain:
        """This SR as the chain core sees it (`sm.chain`)."""
        from .chainsr import LvhdChain

        return LvhdChain(self)

    @cached_property
    def storage(self) -> LvStorage:
        return LvStorage(self.lvm, self.vg, self.dev_root)

    @property
    def lock_path(self) -> Path:
        return self.host_dir / "sr.lock"

    def path(self, record: VdiRecord) -> str:
        return self.storage.path(lv_name(record.uuid, record.vdi_type))

    def exists(self) -> bool:
        return self.lvm.vg_exists(self.vg)

    def check(self) -> None:
        """The VG is this SR: it exists, has an MGT LV with a valid record slot, and that
        record names this SR. SRUnavailable (47) otherwise, before anything is written: an
        ordinary VG that happens to carry the name is never treated (nor deleted) as an SR."""
        if not self.exists():
            raise SRUnavailable(f"no volume group {self.vg} on {','.join(self.devices)}")
        if not self.lvm.lv_exists(self.vg, MGT_LV):
            raise SRUnavailable(f"volume group {self.vg} holds no SR (no {MGT_LV} LV)")
        found = self.read().sr.uuid  # MgtError (47) without a valid record slot
        if found != self.sr_uuid:
            raise SRUnavailable(f"volume group {self.vg} holds SR {found}, not {self.sr_uuid}")

    @contextlib.contextmanager
    def mgt(self, *, writable: bool = False) -> Iterator[MgtStore]:
        from .lvio import open_lv

        backing = open_lv(self.lvm, self.vg, MGT_LV, writable=writable, dev_root=self.dev_root)
        try:
            yield MgtStore(backing, self.lock_path)
        finally:
            backing.close()

    def read(self) -> MetaDoc:
        with self.mgt() as store:
            return store.read()

    @contextlib.contextmanager
    def transaction(self, purpose: str = "") -> Iterator[MetaDoc]:
        with self.mgt(writable=True) as store, store.transaction(purpose) as doc:
            yield doc

    def allocation(self, doc: MetaDoc | None = None) -> str:
        value = self.device_config.get("allocation") or (
            doc.sr.sm_config.get("allocation", "thin") if doc is not None else "thin")
        if value not in ALLOCATIONS:
            raise InvalidArg(f"allocation must be thin or thick, not {value[:20]!r}")
        return value

    def extent(self) -> int:
        return self.lvm.vgs(self.vg).extent_size

    def need_space(self, nbytes: int | Sequence[int], what: str) -> None:
        """SRNoSpace (44) unless ``nbytes`` (one size or the sizes of several new LVs, each
        rounded up to extents) fit in the VG's free space."""
        vg = self.lvm.vgs(self.vg)
        sizes = [nbytes] if isinstance(nbytes, int) else list(nbytes)
        need = sum(-(-n // vg.extent_size) * vg.extent_size for n in sizes)
        if need > vg.free:
            raise SRNoSpace(f"{what} needs {need} bytes, the VG has {vg.free} free")
