"""The model of `tests/api/test_stateful.py`: what an SR seen through `sm.api` must show.

Every VDI's bytes are a size plus the log of writes made to it (immutable, so a snapshot or a
model copy shares it); only a few regions per VDI are read back (`REGIONS`). Identities
(uuid, location, name-label, name-description) are learned when a VDI appears and must never
change afterwards; snapshot trees follow the libvirt model of `sm.api.trees`; VMs follow
`sm.api.vms`. `observe()` reads the same structures from a `StorageManager`, `diff()` names
every difference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sm.api import StorageManager

KiB, MiB = 1024, 1024 * 1024
SIZE = 4 * MiB
"""Size of every VDI created (resizes grow it by whole MiB)."""
REGION = 1024
HOT = (0, MiB + 3000, 3 * MiB - 700)
"""Start of the regions written and read back; the last REGION bytes of a VDI are one more."""


@dataclass(frozen=True)
class Content:
    size: int
    writes: tuple[tuple[int, bytes], ...] = ()

    def write(self, offset: int, data: bytes) -> Content:
        return replace(self, writes=(*self.writes, (offset, data)))

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        for at, data in self.writes:
            lo, hi = max(at, offset), min(at + len(data), offset + length)
            if lo < hi:
                buf[lo - offset:hi - offset] = data[lo - at:hi - at]
        return bytes(buf)


def regions(size: int) -> list[tuple[int, int]]:
    return [(h, REGION) for h in HOT] + [(size - REGION, REGION)]


@dataclass(frozen=True)
class Vdi:
    uuid: str
    location: str
    name_label: str
    name_description: str
    content: Content
    snapshot_of: str = ""
    """Public uuid of the disk this is a snapshot of ("" for a disk)."""

    @property
    def is_snapshot(self) -> bool:
        return bool(self.snapshot_of)

    def identity(self) -> tuple[str, str, str, str]:
        return (self.uuid, self.location, self.name_label, self.name_description)


@dataclass
class Tree:
    """A disk's snapshot tree: snapshot uuid -> (parent uuid, name); the current snapshot."""

    nodes: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    current: str | None = None

    def postorder(self, root: str) -> list[str]:
        out: list[str] = []
        for child in [k for k, (p, _) in self.nodes.items() if p == root]:
            out += self.postorder(child)
        return [*out, root]

    def remove_one(self, key: str) -> None:
        parent, _ = self.nodes.pop(key)
        for k, (p, name) in list(self.nodes.items()):
            if p == key:
                self.nodes[k] = (parent, name)
        if self.current == key:
            self.current = parent


@dataclass
class VmSnap:
    uuid: str
    parent: str | None
    """Name of the parent VM snapshot."""
    disks: dict[str, str]
    """Disk uuid -> uuid of its snapshot taken with this VM snapshot."""


@dataclass
class Vm:
    disks: list[str] = field(default_factory=list)
    snaps: dict[str, VmSnap] = field(default_factory=dict)
    current: str | None = None


@dataclass
class Model:
    vdis: dict[str, Vdi] = field(default_factory=dict)
    trees: dict[str, Tree] = field(default_factory=dict)
    """Disk uuid -> its tree (dropped when the disk is deleted)."""
    vms: dict[str, Vm] = field(default_factory=dict)
    attached: dict[str, tuple[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)
    """Disks attached through the driver, as a toolstack does: uuid -> (the ref it used, what
    `vdi_attach` answered)."""

    def copy(self) -> Model:
        return copy.deepcopy(self)

    # -- queries ----------------------------------------------------------------------------

    # In creation order: uuids differ from run to run, the order of the steps must not.
    def disks(self) -> list[str]:
        return [u for u, v in self.vdis.items() if not v.is_snapshot]

    def snapshots(self) -> list[str]:
        return [u for u, v in self.vdis.items() if v.is_snapshot]

    def tree_of(self, snap: str) -> str | None:
        """The disk whose tree holds `snap`."""
        return next((d for d, t in self.trees.items() if snap in t.nodes), None)

    def vm_of(self, disk: str) -> str | None:
        return next((n for n, vm in self.vms.items() if disk in vm.disks), None)

    def in_vm_snapshot(self, snap: str) -> bool:
        return any(snap in s.disks.values() for vm in self.vms.values() for s in vm.snaps.values())

    # -- transitions (on a copy: `after = model.copy(); after.op(...)`) ----------------------

    def add(self, vdi: Vdi) -> None:
        self.vdis[vdi.uuid] = vdi

    def write(self, uuid: str, offset: int, data: bytes) -> None:
        v = self.vdis[uuid]
        self.vdis[uuid] = replace(v, content=v.content.write(offset, data))

    def resize(self, uuid: str, size: int) -> None:
        v = self.vdis[uuid]
        self.vdis[uuid] = replace(v, content=replace(v.content, size=size))

    def snapshot(self, disk: str, snap: Vdi, name: str) -> None:
        self.add(replace(snap, content=self.vdis[disk].content, snapshot_of=disk))
        tree = self.trees.setdefault(disk, Tree())
        tree.nodes[snap.uuid] = (tree.current, name)
        tree.current = snap.uuid

    def revert(self, disk: str, snap: str) -> None:
        v = self.vdis[disk]
        self.vdis[disk] = replace(v, content=self.vdis[snap].content)
        tree = self.trees.get(disk)
        if tree is not None and snap in tree.nodes:
            tree.current = snap

    def delete_vdi(self, uuid: str) -> None:
        del self.vdis[uuid]
        self.trees.pop(uuid, None)

    def delete_snapshot(self, snap: str, scope: str, metadata_only: bool) -> None:
        """`vdi_delete` of a snapshot in a tree (sm.api.trees.delete)."""
        disk = self.tree_of(snap)
        assert disk is not None
        tree = self.trees[disk]
        order = [snap] if scope == "one" else tree.postorder(snap)
        if scope == "children-only":
            order = order[:-1]
        for key in order:
            tree.remove_one(key)
            if not metadata_only:
                self.vdis.pop(key, None)

    def vm_snapshot(self, vm: str, name: str, uuid: str, snaps: dict[str, Vdi]) -> None:
        m = self.vms[vm]
        for disk, snap in snaps.items():
            self.snapshot(disk, snap, name)
        m.snaps[name] = VmSnap(uuid, m.current, {d: s.uuid for d, s in snaps.items()})
        m.current = name

    def vm_revert(self, vm: str, name: str) -> None:
        m = self.vms[vm]
        for disk, snap in m.snaps[name].disks.items():
            self.revert(disk, snap)
        m.current = name

    def vm_snapshot_delete(self, vm: str, name: str, scope: str, metadata_only: bool) -> None:
        m = self.vms[vm]

        def post(root: str) -> list[str]:
            out: list[str] = []
            for child in [k for k, s in m.snaps.items() if s.parent == root]:
                out += post(child)
            return [*out, root]

        order = [name] if scope == "one" else post(name)
        if scope == "children-only":
            order = order[:-1]
        for key in order:
            snap = m.snaps.pop(key)
            for child in m.snaps.values():
                if child.parent == key:
                    child.parent = snap.parent
            if m.current == key:
                m.current = snap.parent
            for disk_snap in snap.disks.values():
                if disk_snap not in self.vdis or metadata_only:
                    continue
                owner = self.tree_of(disk_snap)
                if owner is not None:
                    self.delete_snapshot(disk_snap, "one", False)
                else:
                    del self.vdis[disk_snap]

    # -- what the API must show -------------------------------------------------------------

    def expected(self) -> dict[str, Any]:
        return {
            "vdis": {u: (*v.identity(), v.is_snapshot, v.snapshot_of, v.content.size)
                     for u, v in self.vdis.items()},
            "trees": {d: (t.current, dict(t.nodes)) for d, t in self.trees.items()
                      if d in self.vdis and (t.nodes or t.current)},
            "vms": {n: (list(vm.disks), vm.current,
                        {s: (x.parent, dict(x.disks)) for s, x in vm.snaps.items()})
                    for n, vm in self.vms.items()},
            "attached": {u: "rw" for u in self.attached if u in self.vdis},
        }


def observe(sm: StorageManager, sr: str) -> dict[str, Any]:
    """The same structures as `Model.expected`, read through the API."""
    vdis = sm.vdis(sr)
    out: dict[str, Any] = {
        "vdis": {v.uuid: (v.uuid, v.location, v.name_label, v.name_description,
                          v.is_a_snapshot, v.snapshot_of if v.is_a_snapshot else "",
                          v.virtual_size) for v in vdis},
        "trees": {}, "vms": {}, "attached": {},
    }
    client = sm._client(sm._config(sr))
    for v in vdis:
        # What the driver says is attached on this host (`sm_vdi_get`): the toolstack's
        # attachments, nothing the API attached for itself.
        mode = str(client.record(v.backing or v.uuid, v.backing_location or v.location)
                   .get("attached") or "")
        if mode:
            out["attached"][v.uuid] = mode
    for v in vdis:
        if v.is_a_snapshot:
            continue
        tree = sm.vdi_tree(v.uuid, sr=sr)
        nodes: dict[str, tuple[str | None, str]] = {}
        stack: list[tuple[Any, str | None]] = [(n, None) for n in tree.roots]
        while stack:
            node, parent = stack.pop()
            nodes[node.uuid] = (parent, node.name)
            stack.extend((c, node.uuid) for c in node.children)
        if nodes or tree.current:
            out["trees"][v.uuid] = (tree.current, nodes)
    for vm in sm.vms():
        snaps = sm.vm_snapshots(vm.name).walk()
        by_uuid = {s.uuid: s.name for s in snaps}
        current = next((s.name for s in snaps if s.current), None)
        out["vms"][vm.name] = (
            [d.vdi for d in vm.disks], current,
            {s.name: (by_uuid.get(s.parent or ""), {d.vdi: d.snapshot for d in s.disks})
             for s in snaps})
    return out


def diff(expected: dict[str, Any], seen: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for part in ("vdis", "trees", "vms", "attached"):
        e, s = expected[part], seen[part]
        for key in sorted(set(e) | set(s)):
            if e.get(key) != s.get(key):
                out.append(f"{part}[{key}]: model {e.get(key)!r}, API {s.get(key)!r}")
    return out


def read_regions(sm: StorageManager, sr: str, uuid: str, size: int,
                 attached: dict[str, Any] | None = None) -> list[bytes]:
    """The sampled regions of one VDI, in one attachment; through the toolstack's own
    attachment (`attached`: what its `vdi_attach` answered) when there is one."""
    from sm.api.data import open_attached

    if attached is not None:
        with open_attached(attached, False) as disk:
            return [disk.read(offset, length) for offset, length in regions(size)]
    with sm._data(uuid, sr, False) as disk:
        return [disk.read(offset, length) for offset, length in regions(size)]


def content_diff(model: Model, uuid: str, seen: list[bytes]) -> str | None:
    content = model.vdis[uuid].content
    for (offset, length), got in zip(regions(content.size), seen):
        want = content.read(offset, length)
        if got != want:
            at = next(i for i in range(length) if got[i:i + 1] != want[i:i + 1])
            return (f"VDI {uuid} at {offset + at}: model {want[at:at + 16]!r}, "
                    f"API {got[at:at + 16]!r}")
    return None
