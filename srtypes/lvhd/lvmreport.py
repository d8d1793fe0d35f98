"""lvm2 JSON reports (``--reportformat json --units b --nosuffix``) as typed records, and the
error raised when an lvm command fails or prints something unexpected."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sm import errors
from sm.edge import to_sm_error
from sm.executor import CommandError, Result

_NOISE = ("WARNING: Activation disabled", "leaked on")


class LvmError(CommandError):
    """An lvm command failed or printed a report sm cannot understand."""

    @property
    def command(self) -> str:
        return self.argv[0] if self.argv else ""

    def to_sm_error(self) -> errors.SMError:
        """The SM error of this failure by the error edge (`sm.edge.LVM_ERRORS`: lvcreate ->
        LVMCreate 50, ...; other commands SMGeneral 202)."""
        return to_sm_error(self, errors.SMError) or errors.SMError(self.message)

    @classmethod
    def wrap(cls, err: CommandError) -> LvmError:
        stderr = b"\n".join(
            line
            for line in err.stderr.splitlines()
            if not any(n.encode() in line for n in _NOISE)
        )
        message = None if err.returncode is not None else err.message
        return cls(err.argv, err.returncode, stderr, stdout=err.stdout, message=message)


@dataclass(frozen=True)
class PvInfo:
    name: str
    vg: str | None
    size: int  # usable by the VG (pe_count * extent_size), bytes
    dev_size: int
    pe_start: int  # offset of extent 0 on the device, bytes
    uuid: str


@dataclass(frozen=True)
class VgInfo:
    name: str
    uuid: str
    size: int
    free: int
    extent_size: int
    extent_count: int
    free_count: int
    pvs: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Segment:
    """One linear segment: LV bytes ``[seg_start, seg_start+seg_size)`` live on ``pv`` at
    ``pe_start + start_extent * extent_size`` onwards."""

    pv: str
    pe_start: int
    start_extent: int
    extent_size: int
    seg_start: int
    seg_size: int

    @property
    def pv_offset(self) -> int:
        return self.pe_start + self.start_extent * self.extent_size

    def to_pv(self, lv_offset: int) -> int:
        if not self.seg_start <= lv_offset < self.seg_start + self.seg_size:
            raise ValueError(f"LV offset {lv_offset} is outside this segment")
        return self.pv_offset + (lv_offset - self.seg_start)


@dataclass(frozen=True)
class LvInfo:
    name: str
    vg: str
    uuid: str
    size: int
    tags: tuple[str, ...]
    segments: tuple[Segment, ...]


def report_rows(result: Result, key: str) -> list[dict[str, str]]:
    try:
        doc = json.loads(result.stdout)
        rows: list[dict[str, str]] = []
        for report in doc["report"]:
            rows.extend(report.get(key, []))
        return rows
    except (ValueError, KeyError, TypeError) as err:
        raise LvmError(
            result.argv,
            result.returncode,
            result.stderr,
            stdout=result.stdout,
            message=f"cannot parse the {key} report of {result.argv[0]}: {err}",
        ) from err


def _int(row: Mapping[str, str], key: str) -> int:
    value = row.get(key, "")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"report field {key}={value!r} is not an integer") from None


def _tags(value: str) -> tuple[str, ...]:
    return tuple(t for t in value.split(",") if t)


def _pe_range(value: str) -> tuple[str, int, int]:
    """``/dev/sdb:3-4`` -> (pv, first, last). Striped/mirrored LVs list several: refused."""
    ranges = value.split()
    if len(ranges) != 1:
        raise ValueError(f"only linear segments are supported, got seg_pe_ranges={value!r}")
    pv, _, span = ranges[0].rpartition(":")
    first, _, last = span.partition("-")
    return pv, int(first), int(last)


def parse_pvs(result: Result) -> list[PvInfo]:
    try:
        return [
            PvInfo(
                name=row["pv_name"],
                vg=row["vg_name"] or None,
                size=_int(row, "pv_size"),
                dev_size=_int(row, "dev_size"),
                pe_start=_int(row, "pe_start"),
                uuid=row["pv_uuid"],
            )
            for row in report_rows(result, "pv")
        ]
    except (KeyError, ValueError) as err:
        raise parse_error(result, err) from err


def parse_vgs(result: Result) -> list[VgInfo]:
    """One row per (VG, PV) because pv_name is requested; folded into one VgInfo per VG."""
    try:
        vgs: dict[str, VgInfo] = {}
        for row in report_rows(result, "vg"):
            name = row["vg_name"]
            pv = (row["pv_name"],) if row.get("pv_name") else ()
            if name in vgs:
                old = vgs[name]
                vgs[name] = replace(old, pvs=old.pvs + pv)
                continue
            vgs[name] = VgInfo(
                name=name,
                uuid=row["vg_uuid"],
                size=_int(row, "vg_size"),
                free=_int(row, "vg_free"),
                extent_size=_int(row, "vg_extent_size"),
                extent_count=_int(row, "vg_extent_count"),
                free_count=_int(row, "vg_free_count"),
                pvs=pv,
                tags=_tags(row["vg_tags"]),
            )
        return list(vgs.values())
    except (KeyError, ValueError) as err:
        raise parse_error(result, err) from err


def parse_pv_segments(result: Result) -> dict[str, list[Segment]]:
    """``pvs --segments`` rows (free space has an empty lv_name) -> segments per LV name."""
    try:
        out: dict[str, list[Segment]] = {}
        for row in report_rows(result, "pvseg"):
            if not row["lv_name"]:
                continue
            pv, first, last = _pe_range(row["seg_pe_ranges"])
            extent_size = _int(row, "vg_extent_size")
            seg = Segment(
                pv=pv,
                pe_start=_int(row, "pe_start"),
                start_extent=first,
                extent_size=extent_size,
                seg_start=_int(row, "seg_start"),
                seg_size=_int(row, "seg_size"),
            )
            if pv != row["pv_name"] or seg.seg_size != (last - first + 1) * extent_size:
                raise ValueError(f"inconsistent segment row {row}")
            out.setdefault(row["lv_name"], []).append(seg)
        for segs in out.values():
            segs.sort(key=lambda s: s.seg_start)
        return out
    except (KeyError, ValueError) as err:
        raise parse_error(result, err) from err


def parse_lvs(result: Result, segments: Mapping[str, list[Segment]]) -> list[LvInfo]:
    try:
        return [
            LvInfo(
                name=row["lv_name"],
                vg=row["vg_name"],
                uuid=row["lv_uuid"],
                size=_int(row, "lv_size"),
                tags=_tags(row["lv_tags"]),
                segments=tuple(segments.get(row["lv_name"], ())),
            )
            for row in report_rows(result, "lv")
        ]
    except (KeyError, ValueError) as err:
        raise parse_error(result, err) from err


def parse_lv_segments(result: Result) -> dict[str, LvInfo]:
    """One ``pvs --segments`` report with LV fields (lv_name, lv_size, lv_tags, lv_uuid,
    vg_name) -> every LV of the VG with its segments: the whole VG in one lvm command."""
    segments = parse_pv_segments(result)
    try:
        out: dict[str, LvInfo] = {}
        for row in report_rows(result, "pvseg"):
            name = row["lv_name"]
            if not name or name in out:
                continue
            out[name] = LvInfo(name=name, vg=row["vg_name"], uuid=row["lv_uuid"],
                               size=_int(row, "lv_size"), tags=_tags(row["lv_tags"]),
                               segments=tuple(segments.get(name, ())))
        return out
    except (KeyError, ValueError) as err:
        raise parse_error(result, err) from err


def parse_vg_of_segments(result: Result) -> VgInfo | None:
    """The VG described by a ``pvs --segments`` report with VG fields (None: no rows, i.e. no
    such VG on the devices lvm looked at)."""
    try:
        rows = report_rows(result, "pvseg")
        if not rows:
            return None
        row = rows[0]
        pvs = tuple(dict.fromkeys(r["pv_name"] for r in rows))
        return VgInfo(name=row["vg_name"], uuid=row["vg_uuid"], size=_int(row, "vg_size"),
                      free=_int(row, "vg_free"), extent_size=_int(row, "vg_extent_size"),
                      extent_count=_int(row, "vg_extent_count"),
                      free_count=_int(row, "vg_free_count"), pvs=pvs,
                      tags=_tags(row["vg_tags"]))
    except (KeyError, ValueError) as err:
        raise parse_error(result, err) from err


def parse_error(result: Result, err: Exception) -> LvmError:
    return LvmError(
        result.argv,
        result.returncode,
        result.stderr,
        stdout=result.stdout,
        message=f"unexpected report from {result.argv[0]}: {err}",
    )
