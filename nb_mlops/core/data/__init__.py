"""Data versions: content-addressed snapshots of DataFrames, arrays, files and folders.

`snapshot` stores a version (deduplicated, profiled, noted for lineage), `restore` brings one back
exactly, `snapshots` lists them, `diff` compares two, `verify` re-hashes the store, `gc` cleans it.
Implementation modules: objects (blake3 object store), refs (manifests, indexes, locks), files,
frames (Arrow chunking), profile, compare (diff), integrity (verify, gc), remote (a store in an
S3 bucket, through s3fs), api.
The modules are not named after the functions so that importing one never shadows a function.
"""

from __future__ import annotations

from nb_mlops.core.data.api import Snapshot, diff, gc, restore, snapshot, snapshots, verify

__all__ = ["Snapshot", "diff", "gc", "restore", "snapshot", "snapshots", "verify"]
