"""The SR methods of `StorageManager` (a mixin): list, create, attach, detach, delete and scan
SRs, and the SR-wide collector and repair commands. Finding an SR's configuration and its
attached client stays in `sm.api.manager`; docs/api.md has the table."""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from sm.errors import InvalidArg
from sm.options import checked

from . import checks
from .client import SRClient
from .config import SrConfig
from .models import SR

if TYPE_CHECKING:
    from .manager import StorageManager
    from .models import VDI

__all__ = ["SrMethods"]


class SrMethods:
    def _ssm(self) -> StorageManager:
        return cast("StorageManager", self)

    @staticmethod
    def _public(sr: SrConfig) -> SR:
        return SR(sr.name, sr.type, sr.uuid, dict(sr.device_config), sr.embedded)

    def srs(self) -> list[SR]:
        """Every SR the registry declares, plus the embedded default."""
        return [self._public(sr) for sr in self._ssm()._configs()]

    def sr(self, name: str | None = None) -> SR:
        """One SR by name or uuid (None: the `default_sr` setting)."""
        return self._public(self._ssm()._config(name))

    def sr_info(self, name: str | None = None) -> dict[str, Any]:
        """The SR, its driver's `sr_get_driver_info` and a VDI count."""
        mgr = self._ssm()
        sr = mgr._config(name)
        client = mgr._client(sr)
        vdis = mgr.vdis(sr.name)
        return {**self._public(sr).to_dict(), "driver": client.driver_info,
                "stats": mgr.sr_stats(sr.name), "vdis": len(vdis),
                "virtual_size": sum(v.virtual_size for v in vdis),
                "physical_utilisation": sum(v.physical_utilisation for v in vdis)}

    def sr_create(self, name: str, type: str, device_config: Mapping[str, str], *,
                  uuid: str | None = None, size: int = 0) -> SR:
        """Create a new SR with its driver (`sr_create`) and declare it in the registry."""
        mgr = self._ssm()
        sr = SrConfig(name, checks.text("SR type", type).lower(),
                      checks.uuid("SR", uuid) if uuid else str(uuidlib.uuid4()),
                      dict(device_config))
        self._check_new(sr)
        with mgr._locked("sr create"):
            SRClient(sr, mgr.transport).sr_create(size)
            mgr.registry.add(sr)
        return self.sr(name)

    def sr_attach(self, name: str, type: str, device_config: Mapping[str, str], *,
                  uuid: str) -> SR:
        """Declare an existing SR in the registry and attach it (`sr_attach`)."""
        mgr = self._ssm()
        sr = SrConfig(name, checks.text("SR type", type).lower(), checks.uuid("SR", uuid),
                      dict(device_config))
        self._check_new(sr)
        with mgr._locked("sr attach"):
            SRClient(sr, mgr.transport).sr_attach()
            mgr.registry.add(sr)
        return self.sr(name)

    def _check_new(self, sr: SrConfig) -> None:
        for known in self._ssm()._configs():
            if sr.name == known.name or sr.uuid == known.uuid:
                raise InvalidArg(f"an SR named {known.name!r} (uuid {known.uuid}) exists")

    def sr_detach(self, name: str) -> None:
        """`sr_detach`, then forget the SR in the registry (its contents stay)."""
        mgr = self._ssm()
        sr = mgr._config(name)
        with mgr._locked("sr detach"):
            SRClient(sr, mgr.transport).sr_detach()
            if not sr.embedded:
                mgr.registry.remove(sr)

    def sr_delete(self, name: str) -> None:
        """`sr_delete` (refused while VDIs exist), then forget the SR and its state."""
        mgr = self._ssm()
        sr = mgr._config(name)
        with mgr._locked("sr delete"):
            client = mgr._client(sr)
            client.sr_delete()
            mgr.state.forget_sr(sr.uuid)
            if sr.embedded:
                mgr.state.set_setting("_default_sr_created", None)
                mgr.state.set_setting("_default_sr_uuid", None)
            else:
                mgr.registry.remove(sr)

    def sr_scan(self, name: str | None = None) -> list[VDI]:
        mgr = self._ssm()
        sr = mgr._config(name)
        with mgr._locked("sr scan"):
            mgr._client(sr).sr_scan()
        return mgr.vdis(sr.name)

    # -- garbage collection (docs/gc.md) and repair ---------------------------------------------

    def gc_run(self, sr: str | None = None) -> dict[str, Any]:
        """Run the SR's collector now, to its end (`sm_gc_run`); its summary."""
        return self._gc("sm_gc_run", sr)

    def gc_status(self, sr: str | None = None) -> dict[str, Any]:
        """Chains, pending merges, reclaimable bytes, the collector's state (`sm_gc_status`)."""
        return self._gc("sm_gc_status", sr)

    def _gc(self, command: str, sr: str | None) -> dict[str, Any]:
        mgr = self._ssm()
        return dict(json.loads(mgr._client(mgr._config(sr)).call(command)))

    @checked
    def sr_repair(self, sr: str | None = None, *,
                  action: Literal["show", "retry", "discard"] = "show", entry: str = "",
                  force: bool = False) -> dict[str, Any]:
        """Journal entries a failed replay set aside, and the VDIs they make unusable: show
        them, or `retry` / `discard` one (`entry`) or all (`sm.repair.repair`)."""
        from sm import repair

        return repair.repair(self._ssm(), sr, action=action, entry=entry, force=force)
