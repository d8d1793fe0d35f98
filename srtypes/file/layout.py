"""Where a File SR keeps things, and the one function that turns a VDI uuid into a path.

    <location>/<uuid>.vhd       a VHD VDI (leaf or hidden base); location == uuid
    <location>/<uuid>.raw       a raw VDI (sparse file)
    <location>/.sm/sr.json      the SR record; .sm/vdi/ the VDI records (sm.records)
    <location>/.sm/journal/     intent journal (sm.journal)
    <location>/.sm/locks/       sr.lock, vdi-<uuid>.lock (sm.locking)
    <run_dir>/file/<sr_uuid>/   per-host state: `attached` marker, `<vdi_uuid>.json` attachments

Nothing here trusts a path or location from a request: image paths are built from a validated
uuid and checked to stay inside the SR directory.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from sm.errors import ConfigLocationMissing, InvalidArg, VDIUnavailable

__all__ = ["EXTENSIONS", "IMAGE_NAME", "SRLayout", "is_uuid", "location_from_config", "refusal"]

EXTENSIONS = ("vhd", "raw")
IMAGE_NAME = re.compile(
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(vhd|raw)\Z"
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
SCRATCH_NAME = re.compile(
    r"\.tmp-[0-9a-f]{12}\.vhd\Z"  # the VHD engine's create (FileStorage.create)
    r"|\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.raw\.new\.tmp\Z"
)  # (the second: the raw create of srtypes/file/chainsr.py)
"""sm's own scratch files in an SR directory, which a killed command can leave behind."""


def refusal(path: str, root_dev: int) -> str | None:
    """Why the existing entry `path` is not an image sm may use (None: it is, or it is
    absent). Never follows a link."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_dev != root_dev:
        return "is on another file system than the SR"
    return None


def is_uuid(text: str) -> bool:
    return bool(_UUID.match(text))


def location_from_config(device_config: Mapping[str, str]) -> Path:
    """`device_config["location"]`: required (94), absolute, normalised (no `..` games)."""
    raw = device_config.get("location", "")
    if not raw:
        raise ConfigLocationMissing("device_config location is required")
    if "\0" in raw or not os.path.isabs(raw):
        raise InvalidArg(f"location must be an absolute path: {raw[:100]!r}")
    return Path(os.path.normpath(raw))


class SRLayout:
    """Paths of one File SR."""

    def __init__(self, location: Path, sr_uuid: str | None, run_dir: Path) -> None:
        self.location = location
        self.sr_uuid = sr_uuid
        self.meta = location / ".sm"
        self.sr_record = self.meta / "sr.json"
        self.journal_dir = self.meta / "journal"
        self.host_dir = run_dir / "file" / (sr_uuid or "_")
        self.attached_marker = self.host_dir / "attached"
        self._dev: int | None = None

    def image(self, uuid: str, ext: str = "vhd") -> str:
        """`<location>/<uuid>.<ext>` for a validated uuid; never outside the SR. An existing
        entry there that is a symbolic link, not a regular file, or on another file system
        is refused (VDIUnavailable 46, `refusal`): no command reaches through it."""
        if not is_uuid(uuid) or ext not in EXTENSIONS:
            raise InvalidArg(f"not a VDI image name: {uuid[:60]!r}.{ext[:10]}")
        path = os.path.join(self.location, f"{uuid}.{ext}")
        if os.path.dirname(path) != str(self.location):  # cannot happen for a uuid; belt+braces
            raise InvalidArg(f"image path escapes the SR: {path!r}")
        return self._confined(path)

    def temp_image(self, uuid: str, tag: str) -> str:
        """A hidden scratch name for an image being built (`.<uuid>.<tag>.vhd`), ignored by
        scan and removed by recovery."""
        if not is_uuid(uuid) or not tag.isalnum():
            raise InvalidArg(f"bad scratch image name {uuid[:60]!r}/{tag[:20]!r}")
        return self._confined(os.path.join(self.location, f".{uuid}.{tag}.vhd"))

    def _confined(self, path: str) -> str:
        if self._dev is None:
            try:
                self._dev = os.stat(self.location).st_dev
            except OSError:
                return path  # no SR directory: the command fails on that, not here
        why = refusal(path, self._dev)
        if why is not None:
            raise VDIUnavailable(f"{path} {why}: sm uses only regular files inside the SR "
                                 "directory; remove it or replace it with the image itself")
        return path

    def sweep_scratch(self) -> list[str]:
        """Remove the scratch files (`SCRATCH_NAME`) a killed command left; returns their
        names. Call only with the SR lock held exclusively: every command that makes one
        holds it, so none is in use. Only sm's own names, only directly in the SR
        directory; an entry that is a link is removed itself, never followed."""
        removed: list[str] = []
        with os.scandir(self.location) as entries:
            for entry in entries:
                if SCRATCH_NAME.match(entry.name) and not entry.is_dir(follow_symlinks=False):
                    try:
                        os.unlink(entry.path)
                    except FileNotFoundError:
                        continue
                    removed.append(entry.name)
        return sorted(removed)

    def attachment(self, vdi_uuid: str) -> Path:
        if not is_uuid(vdi_uuid):
            raise InvalidArg(f"not a uuid: {vdi_uuid[:60]!r}")
        return self.host_dir / f"{vdi_uuid}.json"

    def has_sr(self) -> bool:
        return self.sr_record.is_file()
