"""The SR-type-independent half of the contract suite: a toolstack-like driver of one SR, a
model of what every VDI must read, and the checks that compare the SR with reality.

An SR type joins by providing an `SRTypeConfig` (in `tests/contract/conftest.py`): only what is
specific to it (device_config, how to reach a VDI's data from the attach result, how to list and
check its images, how an administrator drops an image in). Everything else goes over the wire.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tests.smapi import InProcess, Process, SMFault, Transport, request

__all__ = ["DataHandle", "ImageFacts", "SRHarness", "SRTypeConfig", "tree_state"]


class DataHandle(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class ImageFacts:
    """What the storage itself says about one image (not what the records say)."""

    uuid: str
    path: str
    format: str  # "vhd" or "raw"
    virtual_size: int
    parent: str | None = None
    hidden: bool = False


@dataclass(frozen=True)
class SRTypeConfig:
    """Everything the contract suite needs to know about one SR type."""

    name: str
    driver: str  # "package.module:Class"
    executable: Path
    make_device_config: Callable[[Path], dict[str, str]]
    # attach result (the struct vdi_attach returned), writable -> a handle on the VDI's data
    open_data: Callable[[Mapping[str, Any], bool], DataHandle]
    # device_config -> the images present on the storage, by uuid
    images: Callable[[Mapping[str, str]], dict[str, ImageFacts]]
    # one image -> list of problems ([] = clean)
    check_image: Callable[[ImageFacts], list[str]]
    # device_config -> the root of everything the SR stores (snapshotted for "nothing changed")
    storage_root: Callable[[Mapping[str, str]], Path]
    # attach result -> image paths leaf first, for an independent VHD reader (None: not VHD)
    chain_paths: Callable[[Mapping[str, Any]], list[str]] | None = None
    # (device_config, size, writes) -> uuid: an administrator drops an image into the SR
    adopt: Callable[[Mapping[str, str], int, list[tuple[int, bytes]]], str] | None = None
    # (device_config, uuid): an administrator removes an image behind the SR's back
    remove: Callable[[Mapping[str, str], str], None] | None = None
    # None if the type can run here, else the reason it cannot
    unavailable: Callable[[], str | None] = lambda: None
    # volatile names under storage_root that may change on a refused request (lock files)
    volatile: Callable[[str], bool] = lambda rel: False
    # a fixture the type needs (a server, its environment), requested before the SR is made
    fixture: str | None = None
    # device_config -> the storage's whole state (name -> hash), for "nothing changed" checks
    # when the SR is not a directory tree (RBD: the RADOS objects of its namespace); None:
    # tree_state(storage_root); an empty state means "no storage exists"
    state: Callable[[Mapping[str, str]], dict[str, str]] | None = None
    # (device_config, attach result) -> the VDI's bytes read by an independent tool (RBD:
    # `rbd export`); the VHD types use chain_paths with libvhdi instead
    independent_read: Callable[[Mapping[str, str], Mapping[str, Any]], bytes] | None = None
    # VDIs with sm_config type=raw can be snapshotted/cloned (RBD: every VDI is raw)
    snapshots_raw: bool = False
    # a snapshot becomes the base (parent) of the snapshotted VDI, as in VHD chains; False: the
    # snapshot depends on the VDI (RBD snapshots live on the VDI's image)
    snapshot_is_base: bool = True
    # the operation that deepens a chain until SnapshotChainTooLong (109): "snapshot" (VHD:
    # nested type=single snapshots) or "clone" (RBD: clone layers; snapshots are flat)
    depth_grows_by: str = "snapshot"

    def driver_class(self) -> Any:
        module, _, cls = self.driver.partition(":")
        return getattr(importlib.import_module(module), cls)


def tree_state(root: Path, volatile: Callable[[str], bool] = lambda rel: False) -> dict[str, str]:
    """Every directory and file under root with a content hash (symlinks by target)."""
    state: dict[str, str] = {}
    if not root.exists():
        return state
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if not volatile(rel):
                state[rel + "/"] = "dir"
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if volatile(rel):
                continue
            if os.path.islink(path):
                state[rel] = "-> " + os.readlink(path)
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            state[rel] = digest.hexdigest()
    return state


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


@dataclass
class SRHarness:
    """One SR of one type, driven over the wire, with a model of every VDI's content."""

    config: SRTypeConfig
    workdir: Path
    transport: Transport
    sr_uuid: str = "5a1e0000-0000-4000-8000-00000000c0de"
    device_config: dict[str, str] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)
    model: dict[str, bytearray] = field(default_factory=dict)

    @classmethod
    def make(
        cls, config: SRTypeConfig, workdir: Path, *, process: bool = False, typed: bool = True
    ) -> SRHarness:
        env = {"SM_STATE_DIR": str(workdir / "state"), "SM_RUN_DIR": str(workdir / "run")}
        transport: Transport
        if process:
            transport = Process(env=env, typed=typed, executable=config.executable)
        else:
            transport = InProcess(env=env, typed=typed, driver=config.driver_class())
        sr = cls(config, workdir, transport)
        sr.device_config = config.make_device_config(workdir)
        return sr

    def with_transport(self, *, process: bool, typed: bool = True) -> SRHarness:
        """The same SR (and model) driven through another transport."""
        env = dict(self.transport.env)
        transport: Transport
        if process:
            transport = Process(env=env, typed=typed, executable=self.config.executable)
        else:
            transport = InProcess(env=env, typed=typed, driver=self.config.driver_class())
        return SRHarness(
            self.config, self.workdir, transport, self.sr_uuid, self.device_config,
            self.locations, self.model,
        )  # fmt: skip

    # -- the wire --------------------------------------------------------------------------

    def struct(
        self, command: str, args: Any = (), *, vdi: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """The request struct for this SR; `extra` adds keys, overrides any key (including
        `device_config`, `sr_uuid`, `vdi_uuid`, `vdi_location`, `args`), or removes it (None)."""
        location = self.locations.get(vdi, vdi) if vdi else None
        struct = request(
            command, list(args), device_config=self.device_config, sr_uuid=self.sr_uuid,
            vdi_uuid=vdi, vdi_location=location,
        )  # fmt: skip
        for key, value in extra.items():
            if value is None:
                struct.pop(key, None)
            else:
                struct[key] = value
        return struct

    def call(self, command: str, args: Any = (), *, vdi: str | None = None, **extra: Any) -> Any:
        return self.transport.call(self.struct(command, args, vdi=vdi, **extra))

    def fault(
        self, command: str, args: Any = (), *, vdi: str | None = None, **extra: Any
    ) -> SMFault:
        try:
            value = self.call(command, args, vdi=vdi, **extra)
        except SMFault as err:
            return err
        raise AssertionError(f"{command} succeeded ({value!r}), a Fault was expected")

    @property
    def capabilities(self) -> set[str]:
        info = self.transport.call(request("sr_get_driver_info", device_config={}))
        return set(info["capabilities"])

    def tree(self) -> dict[str, str]:
        if self.config.state is not None:
            return self.config.state(self.device_config)
        return tree_state(self.config.storage_root(self.device_config), self.config.volatile)

    def storage_exists(self, device_config: Mapping[str, str] | None = None) -> bool:
        dconf = self.device_config if device_config is None else device_config
        if self.config.state is not None:
            return bool(self.config.state(dconf))
        return self.config.storage_root(dconf).exists()

    def require(
        self, capability: str, command: str, args: Any = (), *, vdi: str | None = None, **extra: Any
    ) -> bool:
        """True if the type advertises `capability`; otherwise assert that `command` is refused
        with 38 and leaves the storage untouched, and return False (the test is done)."""
        if capability in self.capabilities:
            return True
        before = self.tree()
        err = self.fault(command, args, vdi=vdi, **extra)
        assert err.code == 38, err
        assert self.tree() == before, f"{command} refused but the storage changed"
        return False

    # -- SR and VDI operations (updating the model) -----------------------------------------

    def create(self) -> SRHarness:
        assert self.call("sr_create", ["0"]) in (None, "")
        self.call("sr_attach")
        return self

    def vdi_create(
        self,
        size: int,
        name_label: str = "",
        name_description: str = "",
        *,
        sm_config: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> str:
        args = [str(size), name_label, name_description, "", "false", "", "", "false"]
        result = self.call("vdi_create", args, vdi_sm_config=dict(sm_config or {}), **extra)
        uuid, location = result["uuid"], result["location"]
        self.locations[uuid] = location
        vsize = int(self.record(uuid)["virtual_size"])
        assert vsize >= size, (vsize, size)
        self.model[uuid] = bytearray(vsize)
        return str(uuid)

    def _new_vdi(self, result: Mapping[str, Any], source: str) -> str:
        uuid = str(result["uuid"])
        self.locations[uuid] = str(result["location"])
        self.model[uuid] = bytearray(self.model[source])
        return uuid

    def snapshot(self, vdi: str, **driver_params: str) -> str:
        return self._new_vdi(self.call("vdi_snapshot", vdi=vdi, driver_params=driver_params), vdi)

    def clone(self, vdi: str, **driver_params: str) -> str:
        return self._new_vdi(self.call("vdi_clone", vdi=vdi, driver_params=driver_params), vdi)

    def revert(self, snapshot: str, target: str | None) -> None:
        assert self.call("vdi_revert", [target or ""], vdi=snapshot) in (None, "")
        resolved = target if target in self.model else self.record(snapshot)["snapshot_of"]
        self.model[resolved] = bytearray(self.model[snapshot])

    def resize(self, vdi: str, size: int) -> None:
        result = self.call("vdi_resize", [str(size)], vdi=vdi)
        assert result["uuid"] == vdi
        vsize = int(self.record(vdi)["virtual_size"])
        assert vsize >= size
        self.model[vdi].extend(bytes(vsize - len(self.model[vdi])))

    def delete(self, vdi: str) -> None:
        assert self.call("vdi_delete", vdi=vdi) in (None, "")
        self.model.pop(vdi, None)
        self.locations.pop(vdi, None)

    # -- records ----------------------------------------------------------------------------

    def records(self) -> dict[str, dict[str, Any]]:
        listed = self.call("sm_vdi_list")
        assert isinstance(listed, list), listed
        out = {str(r["uuid"]): r for r in listed}
        assert len(out) == len(listed), "duplicate uuids in sm_vdi_list"
        return out

    def record(self, vdi: str) -> dict[str, Any]:
        rec = self.call("sm_vdi_get", vdi=vdi)
        assert isinstance(rec, dict) and rec["uuid"] == vdi, rec
        return rec

    def visible(self) -> dict[str, dict[str, Any]]:
        """Records of the VDIs a toolstack would show (not hidden bases)."""
        return {u: r for u, r in self.records().items() if not _truthy(r.get("hidden"))}

    # -- data -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def data(self, vdi: str, *, writable: bool = False) -> Iterator[DataHandle]:
        flag = "true" if writable else "false"
        caps = self.capabilities
        attached = self.call("vdi_attach", [flag], vdi=vdi)
        if "VDI_ACTIVATE" in caps:
            self.call("vdi_activate", [flag], vdi=vdi)
        handle = self.config.open_data(attached, writable)
        try:
            yield handle
        finally:
            handle.close()
            if "VDI_DEACTIVATE" in caps:
                self.call("vdi_deactivate", vdi=vdi)
            self.call("vdi_detach", vdi=vdi)

    def attach_result(self, vdi: str) -> dict[str, Any]:
        result = self.call("vdi_attach", ["false"], vdi=vdi)
        self.call("vdi_detach", vdi=vdi)
        return dict(result)

    def write(self, vdi: str, writes: list[tuple[int, bytes]]) -> None:
        with self.data(vdi, writable=True) as disk:
            for offset, data in writes:
                disk.write(offset, data)
                self.model[vdi][offset : offset + len(data)] = data
            disk.flush()

    def read(self, vdi: str) -> bytes:
        with self.data(vdi) as disk:
            return disk.read(0, disk.size)

    # -- checks -----------------------------------------------------------------------------

    def assert_content(self, vdi: str, expected: bytes | None = None) -> None:
        want = bytes(self.model[vdi] if expected is None else expected)
        got = self.read(vdi)
        assert len(got) == len(want), f"{vdi}: size {len(got)} != {len(want)}"
        if got != want:
            first = next(i for i in range(len(got)) if got[i] != want[i])
            raise AssertionError(f"{vdi}: content differs from byte {first}")

    def assert_all_content(self) -> None:
        for vdi in list(self.model):
            self.assert_content(vdi)

    def assert_consistent(self) -> None:
        """Every image checks clean; the records match the images one for one."""
        images = self.config.images(self.device_config)
        problems = {f.path: p for f in images.values() if (p := self.config.check_image(f))}
        assert not problems, problems
        records = self.records()
        assert set(records) == set(images), (
            f"records without images: {sorted(set(records) - set(images))}; "
            f"images without records: {sorted(set(images) - set(records))}"
        )
        for uuid, facts in images.items():
            rec = records[uuid]
            assert int(rec["virtual_size"]) == facts.virtual_size, (uuid, rec, facts)
            assert (rec.get("parent") or None) == facts.parent, (uuid, rec, facts)
            if facts.format == "vhd":
                assert _truthy(rec.get("hidden")) == facts.hidden, (uuid, rec, facts)
            if _truthy(rec.get("is_a_snapshot")) and rec.get("snapshot_of"):
                # a snapshot may outlive its VDI, but then it names a uuid, not garbage
                assert len(str(rec["snapshot_of"])) == 36, rec
        for vdi in self.model:
            assert vdi in records, f"{vdi} is in the model but has no record"
            assert not _truthy(records[vdi].get("hidden")), f"{vdi} became hidden"
