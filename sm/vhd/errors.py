"""Typed errors of the VHD engine (standard library only)."""

from __future__ import annotations


class VhdError(Exception):
    """Root of engine errors; ``path`` names the image when known."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class VhdFormatError(VhdError):
    """Bad on-disk data; ``field`` and ``offset`` (absolute, bytes) say what and where."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        offset: int | None = None,
        path: str | None = None,
    ) -> None:
        self.field = field
        self.offset = offset
        where = []
        if field:
            where.append(f"field {field}")
        if offset is not None:
            where.append(f"offset {offset}")
        text = f"{message} ({', '.join(where)})" if where else message
        super().__init__(text, path=path)


class VhdChainError(VhdError):
    """Parent missing, parent uuid mismatch, or a loop in the chain."""


class VhdNoSpaceError(VhdError):
    """A fixed-capacity backing cannot hold the data."""


class VhdUnsupportedError(VhdError):
    """Valid but unsupported (too large, BAT cannot grow safely, ...)."""
