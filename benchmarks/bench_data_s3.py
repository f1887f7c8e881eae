"""A snapshot into an S3 data store vs uploading the same file with s3fs alone, in the same run.

Usage: python benchmarks/bench_data_s3.py [--size-mb 1024]

moto's S3 server stands in for S3 on 127.0.0.1 (started here, stopped by its pid). Ours is
`nb_mlops.snapshot(path, name, wait=True)` into a project whose `data_store` is
`s3://bucket/prefix`: hash, copy into the local cache, then the conditional upload, until durable in
the bucket. The peer is `s3fs.S3FileSystem(endpoint_url=...).put(path, "bucket/key")`, timed before and after
ours (its best time kept); both clients are warmed up first.
Target: ours <= 1.5x the s3fs upload.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import moto_server  # noqa: E402  (the tests' S3 stand-in)

TARGET = 1.5


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def write_file(path: Path, size: int) -> None:
    """`size` random bytes (incompressible), written 64 MiB at a time."""
    rng = np.random.default_rng(0)
    with path.open("wb") as fh:
        left = size
        while left > 0:
            chunk = min(left, 64 << 20)
            fh.write(rng.bytes(chunk))
            left -= chunk


def measure(work: Path, endpoint: str, size_mb: int) -> tuple[float, float]:
    """(ours, peer) seconds for one `size_mb` file, each from a clean page cache writeback."""
    import boto3
    import s3fs

    os.environ.update(moto_server.AWS)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    work.mkdir(parents=True, exist_ok=True)
    big = work / "big.bin"
    write_file(big, size_mb << 20)
    (work / "pyproject.toml").write_text(
        f'[tool.nb_mlops]\ndata_store = "s3://bench/team"\ndata_store_endpoint = "{endpoint}"\n'
    )
    os.chdir(work)
    os.environ["NB_MLOPS_ROOT"] = str(work)
    from nb_mlops.core.data import snapshot

    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    # both clients warmed up first (sessions, credentials, the bucket's first keys)
    (work / "warm.txt").write_text("warm")
    fs.put(str(work / "warm.txt"), "bench/peer/warm.txt")
    snapshot(work / "warm.txt", "warm", wait=True)
    # the peer before and after ours, its best time kept; each side starts with no dirty pages
    # waiting for the disk
    ours = 0.0
    peers: list[float] = []
    for turn in ("peer", "ours", "peer"):
        subprocess.run(["sync"], check=True)
        if turn == "ours":
            ours, snap = timed(lambda: snapshot(big, "big", wait=True))
            assert snap.new and snap.version == 1
            continue
        key = f"bench/peer/big{len(peers)}.bin"
        peers.append(timed(lambda: fs.put(str(big), key))[0])  # noqa: B023 - called at once
        assert fs.size(key) == big.stat().st_size
    return ours, min(peers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (1024)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-data-s3-"))
    proc, endpoint = moto_server.start(work / "moto.log")
    try:
        ours, peer = measure(work / "project", endpoint, args.size_mb)
    finally:
        moto_server.stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        (
            f"file {args.size_mb} MiB snapshot to s3:// until durable vs s3fs put",
            f"{ours:.2f} s",
            f"{peer:.2f} s",
            f"{ours / peer:.2f}x",
            f"<={TARGET}x s3fs  {'PASS' if ours <= TARGET * peer else 'MISS'}",
        )
    ]
    header = ("case", "ours", "peer", "ratio", "target / result")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
