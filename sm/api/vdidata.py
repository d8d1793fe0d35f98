"""The data methods of `StorageManager` (a mixin): read and write a VDI's bytes, export it to
and import it from a file or stream. Each attaches the VDI for the call (`sm.api.exports`) and
opens its data path (`sm.api.data.open_attached`); the formats and chunking are in
`sm.api.transfer`. docs/api.md "Data access"."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, cast

from sm.errors import InvalidArg, VDIMissing
from sm.options import checked

from . import checks, exports, guards
from .data import open_attached

if TYPE_CHECKING:
    from .manager import StorageManager
    from .models import VDI

__all__ = ["DataMethods"]


class DataMethods:
    def _dsm(self) -> StorageManager:
        return cast("StorageManager", self)

    @contextlib.contextmanager
    def _data(self, ref: str, sr: str | None, writable: bool) -> Iterator[Any]:
        mgr = self._dsm()
        cfg = mgr._config(sr)
        vdi = mgr.vdi(ref, cfg.name)
        if writable:
            guards.mutable(vdi, "write into")
        client = mgr._client(cfg)
        with exports.attached(mgr.state, client, vdi, writable) as attach, \
                open_attached(attach, writable, client, vdi.ref) as handle:
            yield handle
        if writable:  # USED (physical utilisation) current once the data path closes
            mgr._client(cfg).vdi_update(vdi.ref)

    def vdi_read(self, ref: str, offset: int = 0, length: int | None = None, *,
                 sr: str | None = None) -> bytes:
        """Bytes of the VDI's virtual disk (length None: to the end)."""
        checks.count("offset", offset)
        if length is not None:
            checks.count("length", length)
        with self._data(ref, sr, False) as disk:
            if length is None:
                length = max(0, disk.size - offset)
            if offset < 0 or offset + length > disk.size:
                raise InvalidArg(f"range {offset}+{length} is outside the disk ({disk.size})")
            data: bytes = disk.read(offset, length)
            return data

    def vdi_write(self, ref: str, offset: int, data: bytes, *, sr: str | None = None) -> None:
        checks.count("offset", offset)
        with self._dsm()._locked("vdi write"), self._data(ref, sr, True) as disk:
            if offset < 0 or offset + len(data) > disk.size:
                raise InvalidArg(f"range {offset}+{len(data)} is outside the disk ({disk.size})")
            disk.write(offset, data)

    @checked
    def vdi_export(self, ref: str, output: str | BinaryIO, fmt: Literal["raw", "vhd"] = "raw",
                   *, sr: str | None = None,
                   progress: Callable[[int, int], None] | None = None) -> int:
        """Write the VDI's content to `output` (a path or a binary stream): raw bytes (a sparse
        file) or a standalone dynamic VHD; `progress(done, total)`. Returns the size."""
        from .transfer import export_to

        with self._data(ref, sr, False) as disk:
            return export_to(disk, output, fmt, progress)

    @checked
    def vdi_import(self, ref: str, source: str | BinaryIO,
                   fmt: Literal["auto", "raw", "vhd"] = "auto", *, sr: str | None = None,
                   progress: Callable[[int, int], None] | None = None, create: bool = False,
                   size: int | None = None) -> VDI:
        """Write an image (a path or a binary stream; raw or VHD, detected by default) into
        the VDI from offset 0. `create`: when `ref` names no VDI, create one called `ref` of
        `size` (default: the image's virtual size). Returns the VDI. (sm.api.transfer)"""
        from .transfer import import_from, open_input

        mgr = self._dsm()
        cfg = mgr._config(sr)
        with open_input(source, fmt) as src:
            vdi = None
            if create:
                with contextlib.suppress(VDIMissing):
                    vdi = mgr.vdi(ref, cfg.name)
            if vdi is not None and size is not None:
                raise InvalidArg(f"VDI {ref!r} exists: size is only for a new VDI "
                                 "(grow it with vdi_resize)")
            if vdi is None and create:
                want = size if size is not None else src.size
                if want is None:
                    raise InvalidArg(f"the size of {src.name} is not known before its end "
                                     "(a raw stream): give the size of the new VDI")
                vdi = mgr.vdi_create(want, ref, sr=cfg.name)
                fresh = True
            else:
                fresh = False
            try:
                with mgr._locked("vdi import"), \
                        self._data(vdi.uuid if vdi else ref, cfg.name, True) as disk:
                    import_from(disk, src, progress, fresh=fresh)
            except BaseException:
                if fresh and vdi is not None:  # a failed import leaves no VDI it created
                    with contextlib.suppress(Exception):
                        mgr.vdi_delete(vdi.uuid, sr=cfg.name)
                raise
        return mgr.vdi(vdi.uuid if vdi else ref, cfg.name)

    def vdi_write_from(self, ref: str, offset: int, stream: BinaryIO, *,
                       sr: str | None = None,
                       progress: Callable[[int, int], None] | None = None) -> int:
        """`vdi_write` of a binary stream's bytes (until its end), in bounded chunks."""
        from .transfer import write_from

        with self._dsm()._locked("vdi write"), self._data(ref, sr, True) as disk:
            return write_from(disk, offset, stream, progress)

    def vdi_read_to(self, ref: str, out: BinaryIO, offset: int = 0, length: int | None = None,
                    *, sr: str | None = None) -> int:
        """`vdi_read` into a binary stream, in bounded chunks; the bytes written."""
        from .transfer import read_to

        with self._data(ref, sr, False) as disk:
            return read_to(disk, offset, length, out)
