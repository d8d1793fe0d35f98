"""The SR's own records: one SR record and the VDI records (standard library only).

`model`: `VdiRecord`, `SrRecord` and their validation; `store`: `RecordStore`, its sharded
files on the SR and its all-or-nothing `Transaction`s (the layout is described there).
"""

from .model import IMAGE_TYPES, REVERT_ID, VDI_TYPES, VERSION, RecordError, SrRecord, VdiRecord
from .store import RecordStore, Transaction, shard_of

__all__ = ["IMAGE_TYPES", "REVERT_ID", "VDI_TYPES", "VERSION", "RecordError", "RecordStore",
           "SrRecord", "Transaction", "VdiRecord", "shard_of"]
