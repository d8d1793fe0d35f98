"""sm: a storage manager in the style of the SMAPIv1 storage backends."""

from __future__ import annotations

__version__ = "0.1.0"
