"""`StorageManager`: the one entry class of the API (see docs/api.md)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from sm import locking
from sm.errors import InvalidArg, SRExists, VDIMissing
from sm.options import DeleteScope, checked, checked_methods
from sm.settings import Settings, env_name

from . import checks, exports, guards, names, trees, vdisnap
from . import revert as revert_ops
from .client import SRClient
from .config import (
    DEFAULT_SR_NAME,
    SETTING_DEFAULTS,
    SETTINGS,
    Paths,
    Registry,
    SrConfig,
    validate_setting,
)
from .models import VDI, RevertResult, SnapshotTree
from .present import present
from .srapi import SrMethods
from .state import State
from .transport import Transport, make
from .vdidata import DataMethods
from .vmapi import VmMethods
from .workflows import WorkflowMethods

__all__ = ["StorageManager"]

log = logging.getLogger(__name__)



@checked_methods
class StorageManager(SrMethods, DataMethods, VmMethods, WorkflowMethods):
    """SRs from the registry, VDIs through SMAPIv1 drivers, state in SQLite.

    `config` overrides the registry file (else `SM_CONFIG`, else the defaults in
    `sm.api.config`); `environ` replaces `os.environ` for every lookup; `transport` forces a
    transport (else the `transport` setting: `inproc` or `exec`).
    """

    def __init__(self, config: str | os.PathLike[str] | None = None, *,
                 environ: Mapping[str, str] | None = None,
                 transport: Transport | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.env_settings = Settings.from_environ(self.environ)
        """The `SM_*` variables of `environ`, read once (`sm.settings`, docs/settings.md)."""
        self.paths = Paths.from_env(config, self.environ, self.env_settings)
        self.registry = Registry(self.paths)
        self._transport = transport
        self._clients: dict[str, SRClient] = {}
        self._set_aside: set[int] = set()
        """State journal entries whose repair failed in this manager (not retried by it)."""

    # -- plumbing -----------------------------------------------------------------------------

    @functools.cached_property
    def state(self) -> State:
        return State(self.paths.state_dir)

    def close(self) -> None:
        if "state" in self.__dict__:
            self.state.close()

    def __enter__(self) -> StorageManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @functools.cached_property
    def driver_environ(self) -> dict[str, str]:
        """The environment drivers run with: state and run directories default to ours."""
        env = dict(self.environ)
        env.setdefault(env_name("state_dir"), str(self.paths.state_dir))
        if os.geteuid() != 0:
            env.setdefault(env_name("run_dir"), str(self.paths.state_dir / "run"))
        return env

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = make(self.setting("transport"), self.driver_environ)
        return self._transport

    @contextlib.contextmanager
    def _locked(self, purpose: str) -> Iterator[None]:
        """One mutating API operation at a time per state directory; repairs first."""
        self.paths.state_dir.mkdir(parents=True, exist_ok=True)
        with locking.lock(self.paths.state_dir / "api.lock", purpose=purpose):
            self._repair()
            yield

    def _repair(self) -> None:
        from . import copy, vdisnap, vms, vmsnap

        recover = {vmsnap.OP: vmsnap.recover, copy.OP: copy.recover,
                   vdisnap.OP: vdisnap.recover, trees.OP: trees.recover, vms.OP: vms.recover}
        for entry in self.state.journal():
            if entry.id in self._set_aside:
                continue
            try:
                recover.get(entry.op, revert_ops.recover)(self, entry)
            except Exception as err:
                # one entry never blocks the others; retried by the next StorageManager
                # (the next command) or repair()
                self._set_aside.add(entry.id)
                self.state.journal_step(entry.id, entry.step, aside=str(err))
                log.warning("could not finish interrupted %s (state journal entry %s): %s; "
                            "set aside, retried by the next command", entry.op, entry.id, err)

    def repair(self) -> int:
        """Finish or undo operations of this layer interrupted by a crash; how many."""
        self._set_aside.clear()
        with locking.lock(self.paths.state_dir / "api.lock", purpose="repair"):
            pending = len(self.state.journal())
            self._repair()
            return pending

    # -- settings -----------------------------------------------------------------------------

    def setting(self, key: str) -> str:
        """Environment `SM_<KEY>` > `sm settings set` (SQLite) > registry file > default."""
        if key not in SETTINGS:
            raise InvalidArg(f"unknown setting {key!r}")
        value = (getattr(self.env_settings, key) or self.state.setting(key)
                 or self.registry.file_setting(key) or SETTING_DEFAULTS[key])
        validate_setting(key, value)
        return value

    def settings(self) -> dict[str, str]:
        return {key: self.setting(key) for key in SETTINGS}

    def set_setting(self, key: str, value: str | None) -> None:
        """Store a setting in SQLite (None: remove it)."""
        if value is not None:
            validate_setting(key, value)
        elif key not in SETTINGS:
            raise InvalidArg(f"unknown setting {key!r}")
        self.state.set_setting(key, value)
        if key == "transport":
            self._transport = None
            self._clients.clear()

    # -- finding SRs (the SR methods: sm.api.srapi) -------------------------------------------

    def _embedded(self) -> SrConfig | None:
        if self.registry.find(DEFAULT_SR_NAME) is not None:
            return None
        sr_uuid = self.state.setting("_default_sr_uuid")
        if sr_uuid is None:
            sr_uuid = str(uuidlib.uuid4())
            self.state.set_setting("_default_sr_uuid", sr_uuid)
        return SrConfig(DEFAULT_SR_NAME, "file", sr_uuid,
                        {"location": str(self.paths.default_sr_dir)}, embedded=True)

    def _configs(self) -> list[SrConfig]:
        embedded = self._embedded()
        return [*self.registry.srs(), *([embedded] if embedded else [])]

    def _config(self, name: str | None) -> SrConfig:
        wanted = name or self.setting("default_sr")
        for sr in self._configs():
            if wanted in (sr.name, sr.uuid):
                return sr
        raise InvalidArg(f"no SR {wanted!r} (see `sm sr list`)")

    def _client(self, sr: SrConfig) -> SRClient:
        """The SR's client, attached (`sr_attach`) once per manager."""
        client = self._clients.get(sr.uuid)
        if client is None or client.transport is not self.transport:
            client = SRClient(sr, self.transport)
            if sr.embedded and self.state.setting("_default_sr_created") != sr.uuid:
                self._create_embedded(client)
            client.sr_attach()
            self._clients[sr.uuid] = client
        return client

    def _create_embedded(self, client: SRClient) -> None:
        Path(client.sr.device_config["location"]).mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(SRExists):
            client.sr_create()
        self.state.set_setting("_default_sr_created", client.sr.uuid)

    # -- VDIs ---------------------------------------------------------------------------------

    def _maybe_repair(self) -> None:
        if any(e.id not in self._set_aside for e in self.state.journal()):
            with self._locked("repair"):
                pass

    @checked
    def vdis(self, sr: str | None = None, *, hidden: bool = False) -> list[VDI]:
        """The VDIs of an SR as this layer presents them (hidden bases only if asked)."""
        self._maybe_repair()
        cfg = self._config(sr)
        found = present(self.state, cfg.uuid, self._client(cfg).records())
        return [v for v in found if hidden or not v.hidden]

    def vdi(self, ref: str, sr: str | None = None) -> VDI:
        """A VDI by public uuid, location, (unique) name-label or snapshot name."""
        return self._find(self.vdis(sr, hidden=True), ref)

    def _find(self, vdis: list[VDI], ref: str) -> VDI:
        named = self.state.snapshots_named(ref)
        matchers: list[Callable[[VDI], bool]] = [
            lambda v: v.uuid == ref.lower(),
            lambda v: v.location == ref,
            lambda v: v.name_label == ref and not v.hidden and not v.is_a_snapshot,
            lambda v: (v.sr, v.uuid) in named,
        ]
        for match in matchers:
            found = [v for v in vdis if match(v)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InvalidArg(f"{ref!r} names {len(found)} VDIs "
                                 f"({', '.join(sorted(v.uuid for v in found))}); use a uuid")
        raise VDIMissing(f"no VDI {ref!r}")

    def vdi_create(self, size: int, name_label: str = "", name_description: str = "", *,
                   sr: str | None = None) -> VDI:
        cfg = self._config(sr)
        with self._locked("vdi create"):
            uuid, _ = self._client(cfg).vdi_create(size, name_label, name_description)
        vdis = self.vdis(cfg.name)
        names.warn_duplicates(vdis, name_label, uuid, cfg.name)
        return self._find(vdis, uuid)

    def vdi_resize(self, ref: str, size: int, *, sr: str | None = None) -> VDI:
        cfg = self._config(sr)
        with self._locked("vdi resize"):
            vdi = self.vdi(ref, cfg.name)
            guards.mutable(vdi, "resize")
            self._client(cfg).vdi_resize(vdi.ref, size)
        return self.vdi(vdi.uuid, cfg.name)

    def vdi_clone(self, ref: str, *, sr: str | None = None, name: str | None = None,
                  description: str | None = None) -> VDI:
        """Clone a VDI or snapshot; `name`/`description` name the clone (default: the
        source's); a name other VDIs of the SR have warns (`names.DuplicateName`)."""
        cfg = self._config(sr)
        with self._locked("vdi clone"):
            client = self._client(cfg)
            uuid, _ = client.vdi_clone(self.vdi(ref, cfg.name).ref)
            vdis = self.vdis(cfg.name, hidden=True)
            clone = self._find(vdis, uuid)
            if name is not None or description is not None:
                names.set_names(self.state, client, clone, vdis, name=name,
                                description=description)
            else:
                names.warn_duplicates(vdis, clone.name_label, uuid, cfg.name)
        return self.vdi(uuid, cfg.name)

    def vdi_snapshot(self, ref: str, name: str = "", description: str = "", *,
                     sr: str | None = None) -> VDI:
        """Snapshot a VDI; the snapshot joins its tree as a child of the current snapshot and
        becomes current. `name` defaults to the snapshot time."""
        checks.name("snapshot", name, empty=True)
        checks.description("snapshot", description)
        cfg = self._config(sr)
        with self._locked("vdi snapshot"):
            vdi = self.vdi(ref, cfg.name)
            uuid = vdisnap.snapshot(self, cfg, vdi, name or time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    description)
        return self.vdi(uuid, cfg.name)

    def vdi_tree(self, ref: str, *, sr: str | None = None) -> SnapshotTree:
        """The snapshot tree of a VDI (libvirt model), current snapshot marked."""
        cfg = self._config(sr)
        return trees.build(self.state, self.vdi(ref, cfg.name))

    @checked
    def vdi_revert(self, ref: str, snapshot: str, *, sr: str | None = None,
                   safety: bool = False) -> RevertResult:
        """Make VDI `ref` read what `snapshot` (uuid or tree name) reads, keeping its uuid,
        name-label, name-description and location. In place (`vdi_revert`) when the SR type
        advertises VDI_REVERT and it does not answer 38; otherwise by clone with the identity
        handed over (see docs/api.md). `safety`: snapshot the VDI first, removed on success."""
        cfg = self._config(sr)
        with self._locked("vdi revert"):
            vdis = self.vdis(cfg.name, hidden=True)
            target = self._find(vdis, ref)
            snap = trees.resolve_snapshot(self.state, vdis, target, snapshot)
            return revert_ops.revert(self, cfg, target, snap, safety=safety)

    @checked
    def vdi_delete(self, ref: str, *, sr: str | None = None, scope: DeleteScope = "one",
                   metadata_only: bool = False, force: bool = False) -> list[str]:
        """Delete a VDI, or a snapshot as libvirt does: `one` (its children get its parent),
        `with-children`, `children-only`; `metadata_only` keeps the volumes and only edits the
        tree. Deleting a VDI (not a snapshot) with `with-children` deletes its snapshots too.
        A disk of a VM is refused (VDIInUse) unless `force`, which also removes it from the
        VM. Returns the uuids removed."""
        cfg = self._config(sr)
        with self._locked("vdi delete"):
            vdis = self.vdis(cfg.name, hidden=True)
            vdi = self._find(vdis, ref)
            client = self._client(cfg)
            if self.state.snapshot((cfg.uuid, vdi.uuid)) is not None:
                return trees.delete(self.state, client, vdis, (cfg.uuid, vdi.uuid), scope,
                                    metadata_only)
            if metadata_only:
                raise InvalidArg(f"{vdi.uuid} is not a snapshot in a tree (metadata_only edits "
                                 "snapshot trees, keeping the volumes)")
            owners = guards.vm_disks(self, vdi, force=force)
            if scope == "with-children":
                # refused before its snapshots go, not after (the driver refuses the disk)
                exports.not_attached_elsewhere(client, vdi, "delete")
                # one journaled deletion: snapshots, then the disk (trees.delete_all)
                removed = trees.delete_all(self.state, client, vdis, vdi, and_vdi=True)
            elif scope == "one":  # the disk alone, journaled as well (volume, then state)
                removed = trees.delete_all(self.state, client, vdis, vdi, and_vdi=True,
                                           snapshots=False)
            else:
                raise InvalidArg(f"{vdi.uuid} is not a snapshot in a tree")
            for disk in owners:
                self.vm_state.remove_disk(disk.vm, disk.sr, disk.vdi)
            return [*removed, vdi.uuid]
