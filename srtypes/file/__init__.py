"""The File SR: VDIs as VHD (or raw) files in one directory (see docs/file-sr.md)."""

from __future__ import annotations

from srtypes.file.sr import FileSR

__all__ = ["FileSR"]
