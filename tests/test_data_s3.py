"""A shared data store in S3: moto's server stands in for S3's HTTP API on 127.0.0.1.

The server is moto's WSGI app under a single-threaded werkzeug server, started once per module as a
subprocess and stopped by its pid: moto checks `If-None-Match` and then puts without a lock, so a
threaded server could let two racing conditional puts both succeed, which S3 itself never does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

import moto_server  # noqa: E402

from nb_mlops.core.config import load_config  # noqa: E402
from nb_mlops.core.data import diff, restore, snapshot, snapshots, verify  # noqa: E402
from nb_mlops.core.data.refs import open_store  # noqa: E402
from nb_mlops.core.errors import DataError, IntegrityError  # noqa: E402


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = moto_server.start(tmp_path_factory.mktemp("moto") / "server.log")
    try:
        yield url
    finally:
        moto_server.stop(proc)


@pytest.fixture
def bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test, with AWS credentials in the environment."""
    import boto3

    for key, value in moto_server.AWS.items():
        monkeypatch.setenv(key, value)
    name = "nbm-" + request.node.name.replace("_", "-")[:40].lower()
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def _project(root: Path, url: str, endpoint: str | None) -> Path:
    root.mkdir(parents=True)
    settings = f'data_store = "{url}"\n'
    if endpoint:
        settings += f'data_store_endpoint = "{endpoint}"\n'
    (root / "pyproject.toml").write_text(f'[project]\nname = "demo"\n\n[tool.nb_mlops]\n{settings}')
    return root


@pytest.fixture
def shared(project: Path, bucket: str, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's project configured for `s3://<bucket>/team` (endpoint from the config)."""
    _project(project / "sub", f"s3://{bucket}/team", endpoint)
    monkeypatch.chdir(project / "sub")
    return project / "sub"


def test_file_folder_and_frame_round_trip(
    shared: Path, bucket: str, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(shared)
    (shared / "a.csv").write_text("x,y\n1,2\n")
    (shared / "folder" / "inner").mkdir(parents=True)
    (shared / "folder" / "one.txt").write_text("one")
    (shared / "folder" / "inner" / "two.bin").write_bytes(bytes(range(256)))
    frame = pd.DataFrame({"x": range(100), "s": [f"v{i}" for i in range(100)]})
    file_snap = snapshot(shared / "a.csv", "raw", wait=True, cfg=cfg)
    dir_snap = snapshot(shared / "folder", "tree", wait=True, cfg=cfg)
    frame_snap = snapshot(frame, "frame", wait=True, lineage={"run": "r1"}, cfg=cfg)
    assert (file_snap.version, dir_snap.version, frame_snap.version) == (1, 1, 1)
    assert not (shared / ".nb_mlops" / "data").exists()  # nothing in the default folder store

    # A second project root with an empty cache, endpoint from AWS's environment variable
    other = _project(shared.parent / "other", f"s3://{bucket}/team", None)
    with monkeypatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        ocfg = load_config(other)
        assert sorted({s.name for s in snapshots(cfg=ocfg)}) == ["frame", "raw", "tree"]
        assert snapshots("frame", cfg=ocfg)[0].lineage == {"run": "r1"}
        pd.testing.assert_frame_equal(restore("frame", cfg=ocfg), frame)
        out = restore("raw", to=other / "a.csv", cfg=ocfg)
        assert Path(out).read_text() == "x,y\n1,2\n"
        tree = Path(restore("tree", to=other / "tree", cfg=ocfg))
        assert (tree / "inner" / "two.bin").read_bytes() == bytes(range(256))
        assert verify(everything=True, cfg=ocfg) == []
        with pytest.raises(DataError, match="not supported"):
            from nb_mlops.core.data import gc

            gc(cfg=ocfg)
    # unchanged content is the same version; changed content the next one
    assert not snapshot(frame, "frame", wait=True, cfg=cfg).new
    assert snapshot(frame.head(10), "frame", wait=True, cfg=cfg).version == 2
    third = _project(shared.parent / "third", f"s3://{bucket}/team", endpoint)
    changes = diff("frame@v1", "frame@v2", cfg=load_config(third))
    assert (changes["rows_added"], changes["rows_removed"]) == (0, 90), changes


_WRITER = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from nb_mlops.core.config import load_config
    from nb_mlops.core.data import snapshot
    root, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = load_config(root)
    for i in range(count):
        frame = pd.DataFrame({"writer": [tag] * 20, "i": [i] * 20})
        snap = snapshot(frame, "shared", wait=True, cfg=cfg)
        print(tag, i, snap.version, flush=True)
    """
)


@pytest.mark.parametrize("where", ["s3", "shared folder"])
def test_concurrent_writers_from_two_roots_keep_every_version(
    project: Path, bucket: str, endpoint: str, where: str
) -> None:
    url = f"s3://{bucket}/team" if where == "s3" else str(project / "shared-data")
    roots = [_project(project / name, url, endpoint) for name in ("alice", "bob")]
    count = 5
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), *sys.path]))}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(root), root.name, str(count)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for root in roots
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    reported = sorted(int(line.split()[2]) for out in outputs for line in out.splitlines())
    listed = snapshots("shared", cfg=load_config(roots[0]))
    # every snapshot got its own version, each manifest is intact and names its own content
    assert len(set(reported)) == 2 * count
    assert sorted(s.version for s in listed) == reported
    seen = set()
    for snap in listed:
        frame = restore(snap, cfg=load_config(roots[1]))
        seen.add((frame["writer"].iloc[0], int(frame["i"].iloc[0])))
    assert seen == {(root.name, i) for root in roots for i in range(count)}


def test_tampered_object_fails_verify_on_read(shared: Path, bucket: str, endpoint: str) -> None:
    import boto3

    (shared / "model.bin").write_bytes(b"weights" * 1000)
    snap = snapshot(shared / "model.bin", "weights", wait=True, cfg=load_config(shared))
    oid = snap.digest
    store = open_store(load_config(shared))
    manifest = store.manifest("weights")
    assert manifest["object"] == oid
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.put_object(Bucket=bucket, Key=f"team/objects/{oid[:2]}/{oid[2:]}", Body=b"evil" * 1000)
    fresh = _project(shared.parent / "fresh", f"s3://{bucket}/team", endpoint)
    with pytest.raises(IntegrityError, match=rf"object {oid} of snapshot weights@v1 .* is corrupt"):
        restore("weights", to=fresh / "model.bin", cfg=load_config(fresh))
    assert not (fresh / "model.bin").exists()
    problems = verify("weights", cfg=load_config(shared))
    assert [p["problem"] for p in problems] == ["corrupt"]
    stored = json.loads(
        s3.get_object(Bucket=bucket, Key="team/refs/weights/v000001.json")["Body"].read()
    )
    assert stored["digest"] == oid


def test_a_claim_lost_to_another_writer_takes_the_next_number(
    project: Path, bucket: str, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{bucket}/team"
    first = open_store(load_config(_project(project / "one", url, endpoint)))
    second = open_store(load_config(_project(project / "two", url, endpoint)))
    assert first.remote.create(first.remote.key("probe"), b"a")
    assert not second.remote.create(second.remote.key("probe"), b"b")  # If-None-Match: *
    assert first.reserve_version("race", "d1") == 1
    # the second writer listed the bucket before the first claimed v1: its create of v1 fails
    monkeypatch.setattr(second, "_claimed", lambda name: {"json": [], "pending": []})
    assert second.reserve_version("race", "d2") == 2
    assert first.remote.read(first._key("race", 1, "pending")) != second.remote.read(
        second._key("race", 2, "pending")
    )


def test_a_missing_bucket_is_one_line_naming_the_store(
    project: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in moto_server.AWS.items():
        monkeypatch.setenv(key, value)
    root = _project(project / "nobucket", "s3://no-such-bucket/x", endpoint)
    (root / "a.txt").write_text("a")
    with pytest.raises(DataError, match=r"data store s3://no-such-bucket/x"):
        snapshot(root / "a.txt", "a", wait=True, cfg=load_config(root))


def test_a_damaged_cache_object_is_never_uploaded(shared: Path) -> None:
    store = open_store(load_config(shared))
    oid, _ = store.objects.put_bytes(b"good bytes")
    damaged = store.objects.path(oid)
    damaged.chmod(0o644)
    damaged.write_bytes(b"bad bytes!")
    version = store.reserve_version("damaged", oid)
    manifest = {"kind": "file", "object": oid, "digest": oid}
    with pytest.raises(IntegrityError, match="corrupt in the local cache"):
        store.commit_version("damaged", version, manifest)
    assert not store.remote.fs.exists(store.remote.object_key(oid))
    assert store.versions("damaged") == []
