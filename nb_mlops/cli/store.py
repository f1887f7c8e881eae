"""`nb-mlops store check | init [--force]`: check the embedded tracking store, or (re)create it."""

from __future__ import annotations

import click

from nb_mlops.core.config import Config, load_config


@click.group()
def store() -> None:
    """The embedded tracking store (`.nb_mlops/mlflow.db`): check it, or start a new one."""


@store.command("check")
def check_cmd() -> None:
    """Check the tracking database in milliseconds: exit 1 with one line saying what is wrong
    (empty, foreign, damaged, truncated, read-only) and what to do. On a tracking server: send
    what killed processes of the project left in its outbox (.nb_mlops/outbox)."""
    from nb_mlops.core.errors import StoreError
    from nb_mlops.core.store import check_database

    cfg = load_config()
    if not cfg.is_embedded:
        _check_server(cfg)
        return
    problem = check_database(cfg.db_path)
    if problem is not None:
        raise StoreError(problem)
    state = "ok" if cfg.db_path.exists() else "ok (not created yet)"
    click.echo(f"{state}: {cfg.db_path}")


def _check_server(cfg: Config) -> None:
    """A server: send what dead processes of the project left in its outbox, and wait."""
    from nb_mlops.core.tracking.stores import replay_outbox

    sent = replay_outbox(cfg) if cfg.tracking_uri.startswith(("http://", "https://")) else 0
    note = f"; {sent} outbox entr{'y' if sent == 1 else 'ies'} sent" if sent else ""
    click.echo(f"ok: a tracking server ({cfg.tracking_uri}){note}")


@store.command("init")
@click.option(
    "--force",
    is_flag=True,
    help="Move an unusable database aside (mlflow.db.unusable-<time>) and start a new one.",
)
def init_cmd(force: bool) -> None:
    """Create the embedded store. A usable database is never touched; an unusable one (empty,
    foreign, damaged, truncated) is refused unless --force, which moves it aside, never deletes it.

    \b
    Example:
      nb-mlops store init --force
    """
    from nb_mlops.core.store import init_store

    cfg, moved = init_store(load_config(), force=force)
    if moved is not None:
        click.echo(f"moved the unusable database to {moved}")
    click.echo(f"ok: {cfg.db_path}")
