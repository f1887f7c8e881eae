"""`nb-mlops data ...`: snapshot, list, show, diff, restore, verify and gc data versions."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import click

from nb_mlops.present.text import format_size

_PRIVATE = {"job", "stored_bytes_added", "stored_size"}


def _snap_dict(snap: Any) -> dict[str, Any]:
    out = {f.name: getattr(snap, f.name) for f in fields(snap) if f.name not in _PRIVATE}
    out["bytes_added"] = snap.bytes_added
    out["size"] = snap.size
    out["ref"] = snap.ref
    out["source"] = snap.source
    return out


@click.group()
def data() -> None:
    """Data versions: content-addressed, deduplicated snapshots of files, folders and frames."""


@data.command("snapshot")
@click.argument("path", type=click.Path(exists=False))
@click.option("-n", "--name", help="Snapshot name (default: the file or folder name).")
@click.option("--context", type=click.Choice(["train", "eval", "test"]), help="Dataset context.")
@click.option("-m", "--message", help="A note kept with the version.")
def snapshot_cmd(path: str, name: str | None, context: str | None, message: str | None) -> None:
    """Store a version of the file or folder PATH (unchanged content: the existing version)."""
    from nb_mlops.core.data import snapshot

    snap = snapshot(path, name, context=context, message=message, wait=True)
    state = f"+{format_size(snap.bytes_added)}" if snap.new else "unchanged"
    click.echo(f"{snap.ref}  {state}  digest {snap.digest}")


@data.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of versions.")
def list_cmd(name: str | None, as_json: bool) -> None:
    """List every version (of NAME, or of every name)."""
    from nb_mlops.core.data import snapshots
    from nb_mlops.present.snapshots import snapshots_text

    items = snapshots(name)
    if as_json:
        click.echo(
            json.dumps(
                [{k: v for k, v in _snap_dict(s).items() if k != "profile"} for s in items],
                indent=2,
            )
        )
    else:
        click.echo(snapshots_text(items))


@data.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the version and its profile as JSON.")
def show_cmd(ref: str, as_json: bool) -> None:
    """Show one version (NAME or NAME@vN): digest, size, schema and profile."""
    from nb_mlops.core.data import snapshots

    snap = snapshots(ref)[-1]
    if as_json:
        click.echo(json.dumps(_snap_dict(snap), indent=2))
        return
    click.echo(f"{snap.ref}  {snap.kind}  digest {snap.digest}")
    click.echo(
        f"size {format_size(snap.size)}  created {snap.created}  context {snap.context or '-'}"
    )
    if snap.path:
        click.echo(f"path {snap.path}")
    if snap.message:
        click.echo(f"message {snap.message}")
    for col, stats in snap.profile.get("columns", {}).items():
        parts = [f"{k}={stats[k]}" for k in ("type", "nulls", "min", "max", "mean") if k in stats]
        click.echo(f"  {col}: " + "  ".join(parts))


@data.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the full diff as JSON.")
def diff_cmd(a: str, b: str, as_json: bool) -> None:
    """Compare version A with version B (e.g. `train@v1 train@v2`)."""
    from nb_mlops.core.data import diff

    result = diff(a, b)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"{result['a']} → {result['b']}" + ("  (same content)" if result["same_content"] else "")
    )
    for key in ("columns", "rows", "files"):
        if key in result:
            click.echo(f"{key}: {json.dumps(result[key])}")
    for key in ("rows_added", "rows_removed", "rows_changed"):
        if key in result:
            click.echo(f"{key}: {result[key]}")
    for col, stats in result.get("stats", {}).items():
        parts = [f"{k} {v.get('a')}→{v.get('b')}" for k, v in stats.items()]
        click.echo(f"  {col}: " + ", ".join(parts))


@data.command("restore")
@click.argument("ref")
@click.option(
    "--to", "to", required=True, type=click.Path(), help="Where to write the file/folder."
)
@click.option("--force", is_flag=True, help="Overwrite existing files that differ.")
def restore_cmd(ref: str, to: str, force: bool) -> None:
    """Write version REF (NAME or NAME@vN) of a file or folder to --to PATH (frames: Parquet)."""
    from nb_mlops.core.data import restore, snapshots

    snap = snapshots(ref)[-1]
    if snap.kind in ("frame", "array"):
        import os

        import pandas as pd

        value = restore(snap.name, snap.version)
        if os.path.exists(to) and not force:
            raise click.ClickException(f"{to} exists; pass --force to overwrite it")
        frame = (
            value
            if isinstance(value, pd.DataFrame)
            else pd.DataFrame({"values": value.reshape(-1)})
        )
        frame.to_parquet(to)
        click.echo(f"{snap.ref} → {to}")
        return
    click.echo(f"{snap.ref} → {restore(snap.name, snap.version, to=to, force=force)}")


@data.command("verify")
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Every version and every stored object.")
def verify_cmd(name: str | None, everything: bool) -> None:
    """Re-hash stored objects; exit non-zero listing each missing or corrupt one."""
    from nb_mlops.core.data import verify

    problems = verify(name, everything)
    for p in problems:
        where = f" ({p['path']})" if p.get("path") else ""
        click.echo(
            f"{p['problem'].upper()}  {p['snapshot'] or 'unreferenced'}  object {p['object']}{where}"
        )
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) found")
    click.echo("ok: every checked object matches its hash")


@data.command("gc")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
def gc_cmd(dry_run: bool) -> None:
    """Remove objects that no snapshot references."""
    from nb_mlops.core.data import gc

    result = gc(dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {result['removed']} object(s), {format_size(result['bytes_freed'])}; kept {result['kept']}"
    )
