"""sm.sizes: the one size rule of vdi_create / vdi_resize (issue 15 §1)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sm import vhd
from sm.errors import VDISize
from sm.sizes import (
    MAX_OFFSET,
    VHD_MAX,
    check_vdi_size,
    file_size_limit,
    vhd_footprint,
)

TiB = 1024**4


def test_vhd_limit_is_the_engines() -> None:
    assert VHD_MAX == vhd.MAX_VIRTUAL_SIZE


@pytest.mark.parametrize(("size", "fmt", "limit"), [
    (-1, "vhd", None), (-(2**63), "raw", None), (VHD_MAX + 1, "vhd", None),
    (2**63 - 1, "raw", None), (2**63 - 1, "vhd", None), (17 * TiB, "raw", 16 * TiB - 4096),
    (VHD_MAX, "vhd", 100 * 1024**3),
])
def test_refused_with_79_and_a_message(size: int, fmt: str, limit: int | None) -> None:
    with pytest.raises(VDISize) as info:
        check_vdi_size(size, fmt=fmt, limit=limit, container="the test")
    assert str(size) in info.value.message


@given(st.integers(-(2**64), 2**64), st.sampled_from(["vhd", "raw"]),
       st.one_of(st.none(), st.integers(0, 2**63)))
def test_accepts_exactly_what_fits(size: int, fmt: str, limit: int | None) -> None:
    try:
        got = check_vdi_size(size, fmt=fmt, limit=limit)
    except VDISize:
        fits = 0 <= size <= MAX_OFFSET - 512 and (fmt != "vhd" or -(-size // 512) * 512 <= VHD_MAX)
        need = vhd_footprint(-(-size // 512) * 512) if fmt == "vhd" else -(-size // 512) * 512
        assert not fits or (limit is not None and need > limit)
    else:
        assert got >= size and got % 512 == 0 and got - size < 512
        assert fmt != "vhd" or got <= VHD_MAX
        assert limit is None or (vhd_footprint(got) if fmt == "vhd" else got) <= limit


@pytest.mark.parametrize("block", [1024, 4096])
def test_ext4_limit_is_the_kernels(tmp_path: Path, block: int) -> None:
    """On a real ext4 (loop-mounted): a file of exactly the limit can be made, one byte more
    is EFBIG, and file_size_limit says so before anything is written."""
    img, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", str(block), str(img)], check=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        limit = file_size_limit(mnt)
        assert limit == (2**32 - 1) * block
        (mnt / "f").touch()
        os.truncate(mnt / "f", limit)
        with pytest.raises(OSError) as info:
            os.truncate(mnt / "f", limit + 1)
        assert info.value.errno == errno.EFBIG
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
