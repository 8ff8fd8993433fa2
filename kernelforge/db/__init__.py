"""The tuning database: versioned JSON, one file per device fingerprint, safe to share and to merge.

It sits below the graph, the runtime and the tuner: planning asks it for params
(:meth:`TuningDB.params_for`), the tuner writes records, ``kernelforge db`` shows, merges and prunes them.
"""

from kernelforge.db.records import SCHEMA_VERSION, DeviceFile, Lookup, Query, Record, Stored, device_meta, new_record
from kernelforge.db.store import TuningDB

__all__ = [
    "SCHEMA_VERSION",
    "DeviceFile",
    "Lookup",
    "Query",
    "Record",
    "Stored",
    "TuningDB",
    "device_meta",
    "new_record",
]
