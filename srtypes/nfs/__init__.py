"""The NFS SR type: a File SR on an NFS export (``server:serverpath/<sr_uuid>``).

``server`` talks to the NFS server without a kernel mount (reachability, exports, versions,
SR directories); ``mounter`` puts the export on a local mount point; ``sr`` is the driver.
See docs/nfs-sr.md.
"""

from __future__ import annotations

from srtypes.nfs.sr import NFSSR

__all__ = ["NFSSR"]
