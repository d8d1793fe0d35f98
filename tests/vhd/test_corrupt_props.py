"""Property: any corruption of any field of a real image (footer and its copy, header, parent
locators, BAT, batmap header and map, bitmaps), written with or without a checksum fixed up
behind it, gives `check`, `info`, an open (and reads) and `precheck` a named error
(`VhdError`; a `VhdFormatError` names its field) or a documented "cannot tell" (no error):
never another exception (OverflowError, MemoryError, IndexError, struct.error, ValueError...);
the SRs' precheck (`srtypes.file.edge.require_sound`) answers VDIUnavailable or nothing.

Images: made by the engine (dynamic, differencing, fixed, 64 KiB blocks) and by qemu-img /
qemu-io (dynamic, 2 MiB blocks). Fast by default (a few seconds);
`--hypothesis-profile=long` runs many more examples.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sm import vhd
from sm.cli.vhd import vhd as vhd_cli
from tests.conftest import require_tool
from tests.vhd.oracle import fix_checksum, layout, poke

KiB, MiB = 1024, 1024 * 1024
SECTOR = 512


# -- the images ----------------------------------------------------------------------------


def _engine_images(root: Path) -> dict[str, Path]:
    base, leaf, fixed = root / "base.vhd", root / "leaf.vhd", root / "fixed.vhd"
    vhd.create(str(base), 1 * MiB, block_size=64 * KiB)
    with vhd.open_chain(str(base), writable=True) as disk:
        disk.write(0, b"B" * (64 * KiB))  # a full block
        disk.write(3 * 64 * KiB + 1024, b"b" * 4096)  # a partial one
        disk.write(9 * 64 * KiB, b"9" * 512)
    vhd.snapshot(str(base), str(leaf))
    with vhd.open_chain(str(leaf), writable=True) as disk:
        disk.write(64 * KiB + 512, b"L" * 2048)
        disk.write(9 * 64 * KiB, b"l" * (64 * KiB))
    vhd.create(str(fixed), 256 * KiB, disk_type=vhd.DiskType.FIXED)
    return {"dynamic": base, "differencing": leaf, "fixed": fixed}


def _qemu_image(root: Path) -> Path:
    require_tool("qemu-img", "qemu-io")
    path = root / "qemu.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic",
                    str(path), "5M"], check=True)
    subprocess.run(["qemu-io", "-f", "vpc", "-c", "write -P 0x51 0 4k",
                    "-c", "write -P 0x52 2M 64k", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corrupt-props")
    out = _engine_images(root)
    out["qemu"] = _qemu_image(root)
    for path in out.values():
        assert vhd.check(str(path), bitmaps=True, parents=False) == [], path
    return out


# -- the fields ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One on-disk field: absolute offset, width, and the checksummed record it sits in
    (start, length, checksum offset inside the record) or None."""

    name: str
    offset: int
    width: int
    record: tuple[int, int, int] | None = None


# (name, offset in the footer, width)
FOOTER = [("cookie", 0, 8), ("features", 8, 4), ("version", 12, 4), ("data_offset", 16, 8),
          ("timestamp", 24, 4), ("creator_app", 28, 4), ("creator_version", 32, 4),
          ("creator_os", 36, 4), ("original_size", 40, 8), ("current_size", 48, 8),
          ("geometry", 56, 4), ("disk_type", 60, 4), ("checksum", 64, 4), ("uuid", 68, 16),
          ("saved_state", 84, 1), ("hidden", 85, 1)]
HEADER = [("cookie", 0, 8), ("data_offset", 8, 8), ("table_offset", 16, 8), ("version", 24, 4),
          ("max_table_entries", 28, 4), ("block_size", 32, 4), ("checksum", 36, 4),
          ("parent_uuid", 40, 16), ("parent_timestamp", 56, 4), ("parent_name", 64, 8)]
LOCATOR = [("code", 0, 4), ("data_space", 4, 4), ("data_length", 8, 4), ("data_offset", 16, 8)]
BATMAP = [("cookie", 0, 8), ("batmap_offset", 8, 8), ("batmap_size", 16, 4), ("version", 20, 4),
          ("checksum", 24, 4), ("marker", 28, 1)]


def fields(path: Path) -> list[Field]:
    """Every field of the image, found with the independent parser."""
    size = path.stat().st_size
    data = path.read_bytes()
    if data[:8] != b"conectix":  # fixed: the footer only
        return [Field(f"footer.{n}", size - SECTOR + o, w, (size - SECTOR, SECTOR, 64))
                for n, o, w in FOOTER]
    lay = layout(path)
    out = [Field(f"footer copy.{n}", o, w, (0, SECTOR, 64)) for n, o, w in FOOTER]
    out += [Field(f"footer.{n}", lay.trailer + o, w, (lay.trailer, SECTOR, 64))
            for n, o, w in FOOTER]
    out += [Field(f"header.{n}", lay.header + o, w, (lay.header, 1024, 36)) for n, o, w in HEADER]
    for i in range(8):
        at = lay.header + 576 + 24 * i
        out += [Field(f"header.locators[{i}].{n}", at + o, w, (lay.header, 1024, 36))
                for n, o, w in LOCATOR]
    for i in range(lay.max_entries):
        out.append(Field(f"bat[{i}]", lay.bat + 4 * i, 4))
    if lay.batmap is not None:
        out += [Field(f"batmap.{n}", lay.batmap + o, w) for n, o, w in BATMAP]
        out.append(Field("batmap map", lay.batmap + SECTOR, 4))
    for i, e in enumerate(lay.entries):
        if e != 0xFFFFFFFF:
            out.append(Field(f"bitmap of block {i}", e * SECTOR, 4))
    for code, _space, _n, off in lay.locators:
        if code:
            out.append(Field("locator text", off, 8))
    return out


def extremes(width: int) -> list[int]:
    top = 1 << (8 * width)
    values = {0, 1, top - 1, top >> 1, (top >> 1) - 1, top - SECTOR, SECTOR, 4096, 2 * MiB}
    if width == 8:
        values |= {2**63, 2**62, 2**40, 2**32 * SECTOR}
    return sorted(v for v in values if 0 <= v < top)


@st.composite
def corruption(draw: st.DrawFn, names: list[str], table: dict[str, list[Field]]
               ) -> tuple[str, Field, bytes, bool]:
    image = draw(st.sampled_from(names))
    field = draw(st.sampled_from(table[image]))
    how = draw(st.sampled_from(["extreme", "random", "delta", "bit"]))
    if how == "extreme":
        raw = draw(st.sampled_from(extremes(field.width))).to_bytes(field.width, "big")
    elif how == "random":
        raw = draw(st.binary(min_size=field.width, max_size=field.width))
    else:
        raw = b""  # computed from the old value when applied
    fix = field.record is not None and draw(st.booleans())
    shift = draw(st.sampled_from([-SECTOR, -1, 1, SECTOR, 4096])) if how == "delta" else 0
    bit = draw(st.integers(0, 8 * field.width - 1)) if how == "bit" else -1
    return image, field, raw or _sentinel(shift, bit), fix


def _sentinel(shift: int, bit: int) -> bytes:
    return b"\0SHIFT" + struct.pack(">qi", shift, bit)


def apply(path: Path, field: Field, raw: bytes, fix: bool) -> None:
    data = path.read_bytes()
    old = data[field.offset:field.offset + field.width]
    if raw.startswith(b"\0SHIFT"):
        shift, bit = struct.unpack(">qi", raw[6:])
        value = int.from_bytes(old, "big")
        value = value ^ (1 << bit) if bit >= 0 else (value + shift) % (1 << (8 * field.width))
        raw = value.to_bytes(field.width, "big")
    poke(path, field.offset, raw)
    if fix and field.record is not None:
        start, length, at = field.record
        fix_checksum(path, start, length, at)


# -- what every entry point may answer -----------------------------------------------------


def _named(err: BaseException) -> None:
    assert isinstance(err, vhd.VhdError), f"{type(err).__name__}: {err}"
    if isinstance(err, vhd.VhdFormatError):
        assert err.field, f"no field named: {err}"


def exercise(path: str) -> None:
    """Every entry point on a (possibly) damaged image: named errors or answers; the SRs'
    precheck (`require_sound`) answers VDIUnavailable (46) naming the image, or nothing."""
    from sm.errors import VDIUnavailable
    from srtypes.file.edge import require_sound

    problems = vhd.check(path, bitmaps=True)  # never raises: problems are strings
    assert all(isinstance(p, str) and p for p in problems)
    try:
        require_sound(path)
    except VDIUnavailable as err:
        assert path in str(err)
    child = path + ".child.vhd"
    for call in (lambda: vhd.info(path), lambda: vhd.precheck(path), lambda: _read(path),
                 lambda: vhd.allocation_map(path), lambda: vhd.chain(path),
                 lambda: vhd.snapshot(path, child)):
        try:
            call()
        except Exception as err:  # the property is about which exceptions escape
            _named(err)
    Path(child).unlink(missing_ok=True)


def _read(path: str) -> None:
    with vhd.open_chain(path) as disk:
        disk.read(0, min(disk.size, 256 * KiB))
        if disk.size:
            disk.read(disk.size - min(disk.size, SECTOR), min(disk.size, SECTOR))


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    return request.config.getoption("hypothesis_profile", None) == "long"


def test_random_corruption_gives_named_errors(images: dict[str, Path], tmp_path: Path,
                                              long_run: bool) -> None:
    table = {name: fields(path) for name, path in images.items()}
    names = sorted(images)
    work = tmp_path / "work"
    work.mkdir()

    @settings(max_examples=2000 if long_run else 100, deadline=None, database=None,
              derandomize=not long_run,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(corruption(names, table), st.integers(0, 2))
    def prop(case: tuple[str, Field, bytes, bool], extra: int) -> None:
        image, field, raw, fix = case
        for p in work.iterdir():
            p.unlink()
        for src in images.values():  # the leaf's parent must sit next to it
            shutil.copy(src, work / src.name)
        path = work / images[image].name
        apply(path, field, raw, fix)
        exercise(str(path))
        if image == "differencing":
            exercise(str(work / images["dynamic"].name))

    prop()


# -- the corruptions that crashed `sm vhd check`, each by name ------------------------------

Corrupt = Callable[[Path], None]


def _put(field: str, value: int, *, fix: bool = True) -> Corrupt:
    def corrupt(path: Path) -> None:
        table = {f.name: f for f in fields(path)}
        names = [field]
        if field.startswith("footer copy."):  # both footers: no good copy to fall back on
            names.append("footer." + field.split(".", 1)[1])
        for name in names:
            apply(path, table[name], value.to_bytes(table[name].width, "big"), fix)

    return corrupt


CRASHERS: dict[str, tuple[str, Corrupt]] = {
    "data-offset-2^63": ("dynamic", _put("footer copy.data_offset", 2**63)),
    "data-offset-2^62": ("dynamic", _put("footer copy.data_offset", 2**62)),
    "data-offset-max": ("dynamic", _put("footer copy.data_offset", 2**64 - SECTOR)),
    "table-offset-2^63": ("dynamic", _put("header.table_offset", 2**63)),
    "table-offset-2^40": ("dynamic", _put("header.table_offset", 2**40)),
    "max-table-entries": ("dynamic", _put("header.max_table_entries", 0xFFFFFFFF)),
    "batmap-offset-2^63": ("dynamic", _put("batmap.batmap_offset", 2**63)),
    "batmap-offset-2^62": ("dynamic", _put("batmap.batmap_offset", 2**62)),
    "batmap-size-max": ("dynamic", _put("batmap.batmap_size", 0xFFFFFFFF)),
    "batmap-size-2^31": ("dynamic", _put("batmap.batmap_size", 0x7FFFFFFF)),
    "locator-offset-2^63": ("differencing", _put("header.locators[0].data_offset", 2**63)),
    "locator-space-max": ("differencing", _put("header.locators[0].data_space", 0xFFFFFFFF)),
    "current-size-2^63": ("dynamic", _put("footer copy.current_size", 2**63)),
}


@pytest.mark.parametrize("case", sorted(CRASHERS))
def test_check_cli_one_line_error(images: dict[str, Path], tmp_path: Path, case: str) -> None:
    image, corrupt = CRASHERS[case]
    for src in images.values():
        shutil.copy(src, tmp_path / src.name)
    path = tmp_path / images[image].name
    corrupt(path)
    for args in (["check", str(path)], ["check", "--bitmaps", str(path)], ["info", str(path)]):
        result = CliRunner().invoke(vhd_cli, args)
        assert result.exit_code == 1, (args, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            args, repr(result.exception))
        text = result.output  # stdout and stderr
        assert "Traceback" not in text
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert lines and all(str(path) in ln for ln in lines), (args, text)
        if args[0] == "info":
            assert len(lines) == 1 and lines[0].startswith("Error: "), text
    exercise(str(path))
