"""Reading and writing VDI data: the one place that knows how an attached VDI is reached.

`vdi_attach`'s `params` (a path to the leaf image) is opened in this process through the VHD
engine (`sm.vhd.open_chain`); a `.raw` image is a plain file. When the driver also serves the
VDI over NBD (`params_nbd`, a local nbdkit), the driver pauses that data path meanwhile
(`sm_vdi_pause` / `sm_vdi_resume`, `sm.vdipause`). When `params` is not a local file (LVM
volumes without device-mapper, Ceph images), the data is read and written over `params_nbd`
with `sm.nbd.client`. Replace
`open_attached` to change the data path; nothing else touches data.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sm.errors import SMError, VDIUnavailable

if TYPE_CHECKING:
    from .client import SRClient

__all__ = ["DataHandle", "open_attached"]


class DataHandle(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def flush(self) -> None: ...


class _RawFile:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self.fd, data, offset)

    def flush(self) -> None:
        os.fsync(self.fd)


@contextlib.contextmanager
def open_attached(attach: Mapping[str, Any], writable: bool, client: SRClient | None = None,
                  vdi: tuple[str, str] | None = None) -> Iterator[DataHandle]:
    """The data of an attached VDI, from the `vdi_attach` result. A local image file is opened
    here; if the driver also serves it on this host (`params_nbd`), its data path is paused
    meanwhile through the driver (`client.paused(vdi)`, `sm_vdi_pause`): one writer of the
    image at a time, and the server reopens the chain (seeing our writes) on resume. A served
    VDI is reached as a client of its NBD server instead when its image is not a local file
    (an LVM volume without device-mapper, a Ceph image), when no `client` is given, or when
    the SR type cannot pause."""
    params = attach.get("params")
    url = attach.get("params_nbd")
    served = isinstance(url, str) and url.startswith("nbd:unix:")
    local = isinstance(params, str) and os.path.isfile(params)
    with contextlib.ExitStack() as stack:
        if served and local and client is not None and vdi is not None:
            local = stack.enter_context(client.paused(vdi)) is not None
        if served and not local:
            yield stack.enter_context(_nbd_client(str(url), writable))
        else:
            yield stack.enter_context(_open_params(attach, writable))


@contextlib.contextmanager
def _nbd_client(url: str, writable: bool) -> Iterator[DataHandle]:
    from sm.nbd.client import NbdClient, NbdError

    try:
        client = NbdClient.from_url(url)
    except OSError as err:
        raise VDIUnavailable(f"cannot reach the VDI's data path {url}: {err}") from err
    try:
        if writable and client.read_only:
            raise VDIUnavailable(f"the data path {url} is read-only")
        try:
            yield client
            if writable:
                client.flush()
        except NbdError as err:
            raise VDIUnavailable(f"{url}: {err}") from err
    finally:
        client.close()


@contextlib.contextmanager
def _open_params(attach: Mapping[str, Any], writable: bool) -> Iterator[DataHandle]:
    params = attach.get("params")
    if not isinstance(params, str) or not params:
        raise VDIUnavailable("the driver gave no local data path (params) for this VDI")
    if params.endswith(".raw"):
        fd = os.open(params, os.O_RDWR if writable else os.O_RDONLY)
        try:
            yield _RawFile(fd)
        finally:
            os.close(fd)
        return
    from sm import vhd

    try:
        with vhd.open_chain(params, writable=writable) as disk:
            yield disk
            if writable:
                disk.flush()
    except vhd.VhdError as err:
        raise SMError(f"{params}: {err}") from err
