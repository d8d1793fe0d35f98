"""Engine and OS errors become SM errors here, at the edge of the SR (one mapping).

- `VhdNoSpaceError`, `OSError(ENOSPC/EDQUOT)` -> SRNoSpace (44); `OSError(EROFS)` ->
  SRUnavailable (47) (`sm.errors.from_os_error`, which the dispatcher applies to any command)
- `VhdFormatError`, `VhdChainError` -> VDILoad (65), with the engine's message (what/where)
- `VhdUnsupportedError`, `OSError(EFBIG)`, `OverflowError` -> VDISize (79) (sizes beyond what
  the format, the file system or an offset can hold; `sm.sizes` refuses them first)
- any other `VhdError` / `OSError(EIO)` -> EIO (200); other `OSError` -> the operation's own
  error class (e.g. VDISnapshot 82), with the OS message.
`SMError`s pass through untouched.

`require_sound(*paths)` is the structural check (`sm.vhd.precheck`) every chain operation of the
File, NFS and LVHD SRs runs on the images it will rename or rewrite, before it journals or
changes anything: a damaged image is refused with VDIUnavailable (46) naming it and the problem.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sm.errors import EIO, SMError, SRNoSpace, VDILoad, VDISize, VDIUnavailable, from_os_error

if TYPE_CHECKING:
    from sm.vhd import Storage

__all__ = ["engine_errors", "require_sound"]


def require_sound(*paths: str, storage: Storage | None = None) -> None:
    """VDIUnavailable (46) unless every image passes `sm.vhd.precheck`; reads metadata only."""
    from sm import vhd

    for path in paths:
        try:
            vhd.precheck(path, storage=storage)
        except OSError as err:
            raise VDIUnavailable(f"image {path} cannot be read, nothing was changed: "
                                 f"{err.strerror or err}") from err
        except vhd.VhdError as err:
            raise VDIUnavailable(
                f"image {path} is damaged, nothing was changed: "
                f"{str(err).removeprefix(f'{path}: ')} (`sm vhd check` shows every problem, "
                "`sm vhd repair` fixes footers and the batmap)") from err


@contextlib.contextmanager
def engine_errors(fallback: type[SMError], what: str = "") -> Iterator[None]:
    prefix = f"{what}: " if what else ""
    try:
        yield
    except SMError:
        raise
    except OSError as err:
        raise (from_os_error(err, what) or fallback(f"{prefix}{err}")) from err
    except OverflowError as err:  # an offset past off_t: a size no image can have
        raise VDISize(f"{prefix}{err}") from err
    except Exception as err:
        from sm import vhd

        if not isinstance(err, vhd.VhdError):
            raise
        if isinstance(err, vhd.VhdNoSpaceError):
            raise SRNoSpace(f"{prefix}{err}") from err
        if isinstance(err, vhd.VhdFormatError | vhd.VhdChainError):
            raise VDILoad(f"{prefix}{err}") from err
        if isinstance(err, vhd.VhdUnsupportedError):
            raise VDISize(f"{prefix}{err}") from err
        raise EIO(f"{prefix}{err}") from err
