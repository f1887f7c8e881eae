"""Reliability of the data store: crashes, full disks, corruption, races, hostile paths."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nb_mlops.cli import main as cli_main
from nb_mlops.core.config import load_config
from nb_mlops.core.data import restore, snapshot, verify
from nb_mlops.core.data.files import safe_join
from nb_mlops.core.data.integrity import manifest_objects
from nb_mlops.core.data.objects import hash_file
from nb_mlops.core.data.refs import open_store
from nb_mlops.core.errors import DataError, IntegrityError
from nb_mlops.core.store import lock

WRITER = textwrap.dedent(
    """
    import sys, numpy as np, pandas as pd
    from nb_mlops.core.data import frames, snapshot
    frames._TARGET_CHUNK_BYTES = 20_000          # many small chunks: many objects to interrupt
    name, seed, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0)
    df = pd.DataFrame({"f": base.standard_normal(rows), "i": base.integers(0, 10**6, rows)})
    df = pd.concat([df, pd.DataFrame({"f": rng.standard_normal(rows // 10), "i": rng.integers(0, 9, rows // 10)})],
                   ignore_index=True)
    print("READY", flush=True)
    snap = snapshot(df, name)
    print(snap.ref, snap.bytes_added, flush=True)
    """
)


def _spawn(root: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NB_MLOPS_")}
    env["NB_MLOPS_ROOT"] = str(root)
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, *args],
        cwd=root,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,  # type: ignore[call-overload]
    )


def _assert_store_consistent(root: Path) -> None:
    store = open_store(load_config(root))
    for oid in store.objects.ids():  # no partial bytes under a hash name
        assert hash_file(store.objects.path(oid)) == oid
    for manifest in store.manifests():  # every manifest names only objects that exist
        for oid, _ in manifest_objects(manifest):
            assert store.objects.exists(oid), (manifest["name"], oid)


def test_sigkill_mid_snapshot_leaves_a_consistent_store(project: Path) -> None:
    rnd = random.Random(1)
    for attempt in range(3):
        proc = _spawn(project, "crash", str(attempt), "300000")
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        time.sleep(rnd.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _assert_store_consistent(project)
    rerun = _spawn(project, "crash", "9", "300000")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "crash@v" in out
    _assert_store_consistent(project)
    assert verify(everything=True) == []
    assert cli_main(["data", "gc"]) == 0  # stale temp files of the killed writers are removed
    assert not list(load_config(project).data_store.joinpath("tmp").glob("*.tmp"))


def test_disk_full_gives_a_clear_error_and_keeps_the_source(project: Path) -> None:
    src = project / "big.bin"
    src.write_bytes(np.random.default_rng(0).bytes(3 << 20))
    before = hash_file(src)
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from nb_mlops.core.data import snapshot
        from nb_mlops.core.errors import DataError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            snapshot(sys.argv[1], "big")
        except DataError as exc:
            print("ERROR", exc)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NB_MLOPS_")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(src)],
        cwd=project,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert done.stdout.startswith("ERROR no space left while writing a copy of"), done.stderr
    assert "\n" not in done.stdout.strip()  # one line
    assert hash_file(src) == before
    _assert_store_consistent(project)
    store = open_store(load_config(project))
    assert list(store.objects.ids()) == [] and store.names() == []
    assert not list(store.objects.tmp.glob("*.tmp"))


def test_flipped_byte_is_refused_by_restore_and_reported_by_verify(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = pd.DataFrame({"x": np.arange(1000.0)})
    snap = snapshot(df, "flip").wait()  # the store is read directly below
    store = open_store(load_config(project))
    oid = next(o for o, _ in manifest_objects(store.manifest("flip")))
    path = store.objects.path(oid)
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=rf"object {oid} of snapshot flip@v1 is corrupt"):
        restore(snap.ref)
    assert cli_main(["data", "verify", "flip"]) == 1
    out = capsys.readouterr()
    assert f"CORRUPT  flip@v1  object {oid}" in out.out
    assert "1 problem(s) found" in out.err


def test_deleted_object_restores_the_rest_and_names_what_failed(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = project / "raw"
    (folder / "sub").mkdir(parents=True)
    for name, text in {"a.csv": "a\n1\n", "b.csv": "b\n2\n", "sub/c.csv": "c\n3\n"}.items():
        (folder / name).write_text(text)
    snapshot(folder, "raw")
    store = open_store(load_config(project))
    lost = next(oid for rel, oid, *_ in store.manifest("raw")["files"] if rel == "b.csv")
    store.objects.delete(lost)
    out = project / "out"
    with pytest.raises(
        IntegrityError, match=rf"except 1 file\(s\): b.csv \(object {lost} missing\)"
    ):
        restore("raw", to=out)
    assert (out / "a.csv").read_text() == "a\n1\n" and (
        out / "sub" / "c.csv"
    ).read_text() == "c\n3\n"
    assert not (out / "b.csv").exists()
    assert cli_main(["data", "verify"]) == 1
    assert f"MISSING  raw@v1  object {lost} (b.csv)" in capsys.readouterr().out


def test_concurrent_writers_both_succeed_deduplicated(project: Path) -> None:
    procs = [
        _spawn(project, name, str(seed), "200000") for name, seed in (("left", 1), ("right", 2))
    ]
    results = [p.communicate(timeout=180) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    assert {out.split()[-2] for out, _ in results} == {"left@v1", "right@v1"}
    store = open_store(load_config(project))
    stored = sum(store.objects.size(o) for o in store.objects.ids())
    # the shared 200,000 rows are stored once: far less than two full copies
    sizes = [store.manifest(name)["size"] for name in ("left", "right")]
    assert stored < 1.3 * max(sizes)
    _assert_store_consistent(project)
    # same name at once: two versions or one (same content), never a corrupt index
    procs = [_spawn(project, "same", "5", "50000") for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert store.versions("same") == [1]
    _assert_store_consistent(project)


def test_a_lock_left_by_a_killed_process_is_taken_over(project: Path) -> None:
    cfg = load_config(project)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
            import sys, time
            from nb_mlops.core.config import load_config
            from nb_mlops.core.data.refs import open_store
            store = open_store(load_config(sys.argv[1]))
            with store.write_lock(), store.gc_guard(exclusive=True):
                print("HELD", flush=True)
                time.sleep(60)
            """
            ),
            str(project),
        ],
        text=True,
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "HELD"
    with pytest.raises(TimeoutError):
        lock(cfg, "data", timeout=0.2).acquire()
    holder.kill()
    holder.wait()
    # the OS released the dead holder's locks: a snapshot goes through at once
    assert (cfg.locks_dir / "data.lock").exists()
    with lock(cfg, "data", timeout=5):
        pass
    assert snapshot(pd.DataFrame({"a": [1]}), "after").version == 1


def test_workspace_edits_never_reach_the_store(project: Path) -> None:
    src = project / "data.csv"
    src.write_text("a,b\n1,2\n")
    snap = snapshot(src, "csv").wait()  # the store is read directly below
    store = open_store(load_config(project))
    obj = store.objects.path(snap.digest)
    assert obj.stat().st_nlink == 1 and obj.stat().st_ino != src.stat().st_ino
    assert not os.access(obj, os.W_OK) or os.geteuid() == 0  # objects are read-only
    with src.open("a") as fh:
        fh.write("3,4\n")
    assert hash_file(obj) == snap.digest
    assert snapshot(src, "csv").version == 2  # the edit is a new version (stat cache noticed)
    # restoring v1 over the edited file needs --force; then the original bytes come back
    with pytest.raises(DataError, match="exists and differs from csv@v1; pass force=True"):
        restore("csv@v1")
    restored = restore("csv@v1", force=True)
    assert restored == src and src.read_text() == "a,b\n1,2\n"
    src.write_text("changed again")  # editing the restored copy leaves the object intact
    assert hash_file(obj) == snap.digest


@pytest.mark.parametrize(
    "bad", ["../x", "/abs", "a/b", "", ".hidden", "x" * 129, "sp ace", "é", "end."]
)
def test_bad_names_are_refused_with_the_rule(project: Path, bad: str) -> None:
    with pytest.raises(DataError, match=r"must match \^\[A-Za-z0-9\]"):
        snapshot(pd.DataFrame({"a": [1]}), bad)


def test_hostile_paths(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    folder = project / "tree"
    (folder / "in").mkdir(parents=True)
    (folder / "in" / "f.txt").write_text("inside")
    os.symlink("in/f.txt", folder / "good-link")
    # a link inside the tree stays a link
    snap = snapshot(folder, "tree")
    out = restore(snap.ref, to=project / "copy")
    assert os.readlink(out / "good-link") == "in/f.txt"
    # a link leaving the tree is refused, its target never copied in
    os.symlink(outside / "secret.txt", folder / "escape")
    with pytest.raises(DataError, match=r"symlink 'escape' .* points outside the snapshot folder"):
        snapshot(folder, "tree")
    (folder / "escape").unlink()
    os.symlink("../../outside", folder / "up")
    with pytest.raises(DataError, match="points outside"):
        snapshot(folder, "tree")
    (folder / "up").unlink()
    # non-UTF-8 and long (255-byte) file names round-trip byte for byte
    raw_name = os.fsdecode(b"caf\xe9-\xff.bin")
    long_name = "L" * 251 + ".txt"
    (folder / raw_name).write_bytes(b"latin")
    (folder / long_name).write_text("long")
    snap = snapshot(folder, "tree")
    out = restore(snap.ref, to=project / "copy2")
    assert (out / raw_name).read_bytes() == b"latin" and (out / long_name).read_text() == "long"
    assert os.fsencode(raw_name) in os.listdir(os.fsencode(out))
    # a source outside the project is read (documented), but restoring it needs an explicit target
    ext = snapshot(outside / "secret.txt", "ext")
    assert ext.path == str(outside / "secret.txt")
    with pytest.raises(DataError, match="outside the project; pass to=PATH"):
        restore("ext")
    # a tampered manifest cannot write outside the target folder
    for evil in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(DataError, match="refusing to restore"):
            safe_join(project / "copy3", evil)


def test_a_folder_comes_back_as_it_was_empty_folders_and_modes_included(project: Path) -> None:
    # Given a tree with an empty folder, an executable script, an empty file and a hidden folder
    folder = project / "tree"
    (folder / "logs" / "empty").mkdir(parents=True)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "k").write_text("v")
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "zero").write_bytes(b"")
    # When it is snapshotted and restored elsewhere
    out = restore(snapshot(folder, "tree").ref, to=project / "copy")

    def listing(root: Path) -> list[tuple[str, bool, int]]:
        return sorted(
            (str(p.relative_to(root)), p.is_dir(), p.stat().st_mode & 0o777 if p.is_file() else 0)
            for p in root.rglob("*")
        )

    # Then it has the same folders (the empty one too), files and modes
    assert listing(out) == listing(folder)
    # And a new empty folder is a new version; the same tree again is not
    assert snapshot(folder, "tree").version == 1
    (folder / "more").mkdir()
    assert snapshot(folder, "tree").version == 2


def test_background_write_failure_is_reported_and_records_nothing(project: Path) -> None:
    """A full disk for a DataFrame, whose bytes are written after `snapshot` returns: `wait()`
    (and the next data call) report the failure; no manifest, reservation or partial object is left."""
    script = textwrap.dedent(
        """
        import resource, signal
        import numpy as np, pandas as pd
        from nb_mlops.core.data import frames, snapshot, snapshots
        from nb_mlops.core.errors import DataError
        frames._TARGET_CHUNK_BYTES = 64 << 20           # chunks of several MiB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        df = pd.DataFrame({"x": np.random.default_rng(0).standard_normal(1_000_000)})
        snap = snapshot(df, "big")
        print("TAKEN", snap.ref, flush=True)
        try:
            snap.wait()
        except DataError as exc:
            print("ERROR", exc)
        print("LISTED", len(snapshots()))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NB_MLOPS_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "TAKEN big@v1", done.stderr
    assert lines[1].startswith("ERROR big@v1 was not stored: no space left while writing"), lines
    assert lines[2] == "LISTED 0"
    _assert_store_consistent(project)
    store = open_store(load_config(project))
    assert store.names() == [] and not list(store.refs.glob("*/*.pending"))
    assert not list(store.objects.tmp.glob("*.tmp"))
