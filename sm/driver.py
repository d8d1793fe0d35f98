"""The base an SR type implements: `SRDriver`, its context, and the typed results.

An SR type is a subclass of `SRDriver` registered under the `sm.srtypes` entry-point group
(`sm.registry`) and shipped with an executable `bin/<Type>SR` of a few lines
(`from sm.dispatch import main; main("<type>")`). It declares, once, as class attributes:

- `TYPE` (the type string, e.g. "file"), `NAME`, `DESCRIPTION`, `VENDOR`, `COPYRIGHT`,
  `DRIVER_VERSION`, `REQUIRED_API_VERSION` ("1.0");
- `CAPABILITIES`: a frozenset of `Capability`; the dispatcher refuses (Fault 38, without
  constructing the driver) every command whose capability is not in it, and every command whose
  handler the class does not override;
- `CONFIGURATION`: the `device_config` keys it understands, as (key, description) pairs;
- `EXTRA_COMMANDS`: optional commands beyond SMAPIv1 (name -> `Command`), e.g. reading the
  SR's own VDI records.

The dispatcher parses and validates the request (`sm.requests`), builds a `DriverContext`,
constructs the driver with it, calls the one handler for the command with its typed request,
converts the typed result to the wire (`None` -> nil, `str` -> string, a `WireResult` -> its
`to_wire()`), and calls `close()`. Handlers report failures by raising an `sm.errors.SMError`
subclass; anything else becomes GenericException (1200) with the traceback logged on stderr.

Construction must be cheap and must not touch storage: the dispatcher may construct a driver
only to find that the request is invalid.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from sm.capabilities import Capability
from sm.errors import Unimplemented
from sm.requests import (
    DriverInfoRequest,
    Request,
    SRCreateRequest,
    SRProbeRequest,
    SRRequest,
    VDIAttachRequest,
    VDICreateRequest,
    VDIIntroduceRequest,
    VDIRequest,
    VDIResizeRequest,
    VDIRevertRequest,
    VDISnapshotRequest,
)
from sm.settings import DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, Settings
from sm.struct import Frozen

if TYPE_CHECKING:
    from sm.executor import Executor
    from sm.xmlrpc import Value

__all__ = ["DEFAULT_RUN_DIR", "DEFAULT_STATE_DIR", "AttachResult", "Command", "DriverContext",
           "DriverInfo", "SRDriver", "VdiRef", "WireResult"]


# -- results ----------------------------------------------------------------------------------


class WireResult(Protocol):
    """A typed result that knows its XML-RPC form."""

    def to_wire(self) -> Value: ...


class VdiRef(Frozen):
    """A VDI as `vdi_create`, `vdi_snapshot`, `vdi_clone`, `vdi_resize*` and `vdi_introduce`
    report it: struct `{uuid, location}`."""

    uuid: str
    location: str

    def to_wire(self) -> Value:
        return {"uuid": self.uuid, "location": self.location}


class AttachResult(Frozen):
    """`vdi_attach` result. `params_nbd` is `nbd:unix:<socket>:exportname=<name>`; `params` a
    path to the data; unset optional fields are left out of the struct; `xenstore_data` is
    always sent (possibly empty)."""

    params_nbd: str | None = None
    params: str | None = None
    o_direct: bool | None = None
    o_direct_reason: str | None = None
    xenstore_data: Mapping[str, str] = MappingProxyType({})

    def to_wire(self) -> Value:
        wire: dict[str, Value] = {}
        if self.params is not None:
            wire["params"] = self.params
        if self.params_nbd is not None:
            wire["params_nbd"] = self.params_nbd
        if self.o_direct is not None:
            wire["o_direct"] = self.o_direct
        if self.o_direct_reason is not None:
            wire["o_direct_reason"] = self.o_direct_reason
        wire["xenstore_data"] = dict(self.xenstore_data)
        return wire


class DriverInfo(Frozen):
    """`sr_get_driver_info` result, built from the class attributes by `SRDriver.driver_info`."""

    name: str
    description: str
    vendor: str
    copyright: str
    driver_version: str
    required_api_version: str
    capabilities: tuple[Capability, ...]
    configuration: tuple[tuple[str, str], ...]

    def to_wire(self) -> Value:
        return {
            "name": self.name,
            "description": self.description,
            "vendor": self.vendor,
            "copyright": self.copyright,
            "driver_version": self.driver_version,
            "required_api_version": self.required_api_version,
            "capabilities": [cap.value for cap in self.capabilities],
            "configuration": [{"key": k, "description": d} for k, d in self.configuration],
        }


class Command(Frozen):
    """One entry of the dispatch table: the request type the struct is validated into, the name
    of the `SRDriver` method that handles it, and the capability it needs (None: always on)."""

    request: type[Request]
    handler: str
    capability: Capability | None = None
    static: bool = False
    """A classmethod handler, answered without constructing the driver."""


# -- context ----------------------------------------------------------------------------------


class DriverContext:
    """What a driver is constructed with.

    - `sr_uuid` (None for `sr_probe`) and `device_config` of the request;
    - `executor`: the one way to run programs (`sm.executor`); injected by tests, otherwise a
      `SubprocessExecutor` created on first use (so a request that runs nothing never imports
      subprocess machinery);
    - `settings`: the `SM_*` variables (`sm.settings`, docs/settings.md), read once by the
      dispatcher (else from `environ`, default `os.environ`); drivers read them here;
    - `state_dir` (SM_STATE_DIR, default /var/lib/sm) and `run_dir` (SM_RUN_DIR, default
      /run/sm), unless given; neither is created here.
    """

    def __init__(
        self,
        *,
        sr_uuid: str | None = None,
        device_config: Mapping[str, str] | None = None,
        executor: Executor | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = Settings.from_environ(environ) if settings is None else settings
        self.sr_uuid = sr_uuid
        self.device_config: Mapping[str, str] = MappingProxyType(dict(device_config or {}))
        self.state_dir = Path(state_dir or self.settings.state_dir or DEFAULT_STATE_DIR)
        self.run_dir = Path(run_dir or self.settings.run_dir or DEFAULT_RUN_DIR)
        self._executor = executor

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            from sm.executor import SubprocessExecutor

            self._executor = SubprocessExecutor()
        return self._executor

    def __repr__(self) -> str:
        return f"DriverContext(sr_uuid={self.sr_uuid!r}, state_dir={str(self.state_dir)!r})"


_F = TypeVar("_F", bound=Callable[..., Any])


def _default(func: _F) -> _F:
    """Mark a base handler as "not implemented" so the dispatcher can refuse without an
    instance (see `SRDriver.implements`)."""
    func._sm_unimplemented = True  # type: ignore[attr-defined]
    return func


# -- the base ---------------------------------------------------------------------------------


class SRDriver:
    """Base of every SR type. Subclass it, set the class attributes, override the handlers of
    the commands the type supports (and advertise their capabilities).

    Every handler takes the typed request of its command and returns a typed result. The
    defaults raise `Unimplemented` (38); the dispatcher answers 38 for them without even
    constructing the driver.
    """

    TYPE: ClassVar[str] = ""
    NAME: ClassVar[str] = ""
    DESCRIPTION: ClassVar[str] = ""
    VENDOR: ClassVar[str] = ""
    COPYRIGHT: ClassVar[str] = ""
    DRIVER_VERSION: ClassVar[str] = "1.0"
    REQUIRED_API_VERSION: ClassVar[str] = "1.0"
    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset()
    CONFIGURATION: ClassVar[Sequence[tuple[str, str]]] = ()
    EXTRA_COMMANDS: ClassVar[Mapping[str, Command]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Catch declaration mistakes when the class is defined, not when a request arrives.
        for cap in cls.CAPABILITIES:
            if not isinstance(cap, Capability):
                raise TypeError(f"{cls.__name__}.CAPABILITIES holds {cap!r}, not a Capability")
        for name, command in cls.EXTRA_COMMANDS.items():
            if not callable(getattr(cls, command.handler, None)):
                raise TypeError(f"{cls.__name__}: no handler {command.handler!r} for {name}")

    def __init__(self, context: DriverContext) -> None:
        self.context = context

    @classmethod
    def driver_info(cls) -> DriverInfo:
        """The `sr_get_driver_info` answer; needs no instance and touches nothing."""
        return DriverInfo(
            name=cls.NAME,
            description=cls.DESCRIPTION,
            vendor=cls.VENDOR,
            copyright=cls.COPYRIGHT,
            driver_version=cls.DRIVER_VERSION,
            required_api_version=cls.REQUIRED_API_VERSION,
            capabilities=tuple(sorted(cls.CAPABILITIES, key=lambda cap: cap.value)),
            configuration=tuple((str(k), str(d)) for k, d in cls.CONFIGURATION),
        )

    @classmethod
    def sr_get_driver_info(cls, request: DriverInfoRequest) -> DriverInfo:
        """Static handler of `sr_get_driver_info` (no session, no storage)."""
        return cls.driver_info()

    @classmethod
    def implements(cls, handler: str) -> bool:
        """Whether this class has a real implementation of the handler method `handler`."""
        method = getattr(cls, handler, None)
        return callable(method) and not getattr(method, "_sm_unimplemented", False)

    def close(self) -> None:
        """Called by the dispatcher after the handler, success or not. Default: nothing."""

    def _unimplemented(self, request: Request) -> Unimplemented:
        return Unimplemented(f"{request.command} is not implemented by SR type {self.TYPE!r}")

    # -- SR commands --------------------------------------------------------------------------

    @_default
    def sr_create(self, request: SRCreateRequest) -> None:
        """Create the SR `request.sr_uuid` from `device_config`. `request.size` is the
        requested physical size (0: all of the device). Errors: SRExists (42), the type's
        create errors (FileSRCreate 61, LVMCreate 50, NFSMount 73, ...)."""
        raise self._unimplemented(request)

    @_default
    def sr_delete(self, request: SRRequest) -> None:
        """Destroy the SR. Errors: SRNotEmpty (39) while it holds VDIs, SRInUse (16)."""
        raise self._unimplemented(request)

    @_default
    def sr_attach(self, request: SRRequest) -> None:
        """Make the SR usable on this host (mount, activate, replay journals). Idempotent.
        Errors: SRUnavailable (47)."""
        raise self._unimplemented(request)

    @_default
    def sr_detach(self, request: SRRequest) -> None:
        """Undo `sr_attach`. Idempotent. Errors: SRInUse (16) while VDIs are attached."""
        raise self._unimplemented(request)

    @_default
    def sr_scan(self, request: SRRequest) -> None:
        """Reconcile the SR's VDI records with its volumes; garbage-collect. Errors: SRScan
        (40)."""
        raise self._unimplemented(request)

    @_default
    def sr_update(self, request: SRRequest) -> None:
        """Refresh SR-level statistics (sizes). Capability SR_UPDATE."""
        raise self._unimplemented(request)

    @_default
    def sr_probe(self, request: SRProbeRequest) -> str:
        """Describe what `device_config` points at, as an XML document in a string (e.g.
        `<SRlist><SR><UUID>..</UUID></SR></SRlist>`). No `sr_uuid`. Capability SR_PROBE."""
        raise self._unimplemented(request)

    @_default
    def sr_content_type(self, request: SRRequest) -> str:
        """The SR's content type (e.g. "user", "iso")."""
        raise self._unimplemented(request)

    # -- VDI commands -------------------------------------------------------------------------

    @_default
    def vdi_create(self, request: VDICreateRequest) -> VdiRef:
        """Create a VDI of `request.size` bytes (rounded up as the format needs); returns the
        new VDI (uuid: `request.vdi_uuid` if given, else a fresh one). Errors: VDICreate (78),
        VDISize (79), SRNoSpace (44). Capability VDI_CREATE."""
        raise self._unimplemented(request)

    @_default
    def vdi_delete(self, request: VDIRequest) -> None:
        """Delete the VDI. Errors: VDIInUse (24), VDIMissing (144), VDIDelete (80).
        Capability VDI_DELETE."""
        raise self._unimplemented(request)

    @_default
    def vdi_update(self, request: VDIRequest) -> None:
        """Refresh the VDI's record (e.g. after its metadata changed). Capability VDI_UPDATE."""
        raise self._unimplemented(request)

    @_default
    def vdi_introduce(self, request: VDIIntroduceRequest) -> VdiRef:
        """Adopt the existing volume at `request.vdi_location` under `request.vdi_uuid`.
        Errors: VDIExists (43), VDIMissing (144). Capability VDI_INTRODUCE."""
        raise self._unimplemented(request)

    @_default
    def vdi_attach(self, request: VDIAttachRequest) -> AttachResult:
        """Prepare the VDI for I/O on this host (`request.writable`); returns how to reach the
        data (`params_nbd`, `params`). Errors: VDIUnavailable (46), VDIInUse (24), VDIMissing
        (144). Capability VDI_ATTACH."""
        raise self._unimplemented(request)

    @_default
    def vdi_detach(self, request: VDIRequest) -> None:
        """Undo `vdi_attach`. Idempotent. Capability VDI_DETACH."""
        raise self._unimplemented(request)

    @_default
    def vdi_activate(self, request: VDIAttachRequest) -> None:
        """Start the data path of an attached VDI (`request.writable`). Capability
        VDI_ACTIVATE."""
        raise self._unimplemented(request)

    @_default
    def vdi_deactivate(self, request: VDIRequest) -> None:
        """Stop the data path; flush. Idempotent. Capability VDI_DEACTIVATE."""
        raise self._unimplemented(request)

    @_default
    def vdi_snapshot(self, request: VDISnapshotRequest) -> VdiRef:
        """Snapshot the VDI; returns the NEW VDI (the original keeps its uuid and location).
        Errors: VDISnapshot (82), SnapshotChainTooLong (109), SRNoSpace (44). Capability
        VDI_SNAPSHOT."""
        raise self._unimplemented(request)

    @_default
    def vdi_clone(self, request: VDISnapshotRequest) -> VdiRef:
        """Clone the VDI; returns the NEW writable VDI. Errors: VDIClone (81),
        SnapshotChainTooLong (109). Capability VDI_CLONE."""
        raise self._unimplemented(request)

    @_default
    def vdi_resize(self, request: VDIResizeRequest) -> VdiRef:
        """Grow the VDI (offline) to `request.new_size`. Errors: VDIResize (110), VDISize (79)
        for a shrink, SRNoSpace (44). Capability VDI_RESIZE."""
        raise self._unimplemented(request)

    @_default
    def vdi_resize_online(self, request: VDIResizeRequest) -> VdiRef:
        """`vdi_resize` while attached. Capability VDI_RESIZE_ONLINE."""
        raise self._unimplemented(request)

    @_default
    def vdi_revert(self, request: VDIRevertRequest) -> None:
        """Replace the contents of `request.target` (resolved by the SR from the snapshot's
        snapshot-of when None) with those of `request.snapshot`, keeping the target's uuid,
        name and location; the snapshot is unchanged; idempotent. Errors: VDIMissing (144),
        VDIInUse (24). Capability VDI_REVERT (without it, callers fall back to vdi_clone)."""
        raise self._unimplemented(request)

    @_default
    def vdi_generate_config(self, request: VDIRequest) -> str:
        """A string from which another host can attach the VDI. Capability
        VDI_GENERATE_CONFIG."""
        raise self._unimplemented(request)
