"""Reading and writing VDI data: the one place that knows how an attached VDI is reached.

`vdi_attach`'s `params` (a path to the leaf image) is opened in this process through the VHD
engine (`sm.vhd.open_chain`); a `.raw` image is a plain file. When the driver also serves the
VDI over NBD (`params_nbd`, a local nbdkit), that server is paused meanwhile. When `params` is
not a local file (LVM volumes without device-mapper, Ceph images), the data is read and written
over `params_nbd` with `sm.nbd.client`. Replace
`open_attached` to change the data path; nothing else touches data.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from sm.errors import SMError, VDIUnavailable

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
def _server_paused(attach: Mapping[str, Any]) -> Iterator[None]:
    """If the driver serves the VDI over NBD on this host (`params_nbd` of a local nbdkit of
    `sm.nbd`), pause the server while this process opens the chain itself: one writer of the
    image at a time; the server reopens the chain (and sees our writes) on resume."""
    url = attach.get("params_nbd")
    if not isinstance(url, str) or not url.startswith("nbd:unix:"):
        yield
        return
    from sm.nbd.client import parse_url
    from sm.nbd.serving import Servers

    sock, _ = parse_url(url)
    with Servers.in_dir(os.path.dirname(sock)).live(os.path.basename(sock).removesuffix(".sock")):
        yield


@contextlib.contextmanager
def open_attached(attach: Mapping[str, Any], writable: bool) -> Iterator[DataHandle]:
    """The data of an attached VDI, from the `vdi_attach` result: a local image file is
    opened here (its NBD server paused meanwhile); an image that is not a local file (an LVM
    volume without device-mapper, a Ceph image) is reached as a client of its NBD server."""
    params = attach.get("params")
    url = attach.get("params_nbd")
    local = isinstance(params, str) and os.path.isfile(params)
    if not local and isinstance(url, str) and url.startswith("nbd:unix:"):
        with _nbd_client(url, writable) as handle:
            yield handle
        return
    with _server_paused(attach), _open_params(attach, writable) as handle:
        yield handle


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
