"""`%snapshot`, `%restore`, `%snapshots`: the notebook face of `nb_mlops.core.data`.

Cheap to import: pandas, pyarrow and the store load on first use.
"""

# IPython's magic_arguments decorators are untyped
# mypy: disable-error-code="no-untyped-call,untyped-decorator,misc"

from __future__ import annotations

import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from nb_mlops.present.text import format_size

__all__ = ["DataMagics"]


def _unquote(value: str | None) -> str | None:
    """IPython's magic argument parser keeps quotes on Windows-style splitting: drop a matching pair."""
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _usage(exc: Exception) -> UsageError:
    return UsageError(str(exc).splitlines()[0])


@magics_class
class DataMagics(Magics):
    """Data versions from the notebook: snapshot, restore, list."""

    @magic_arguments()
    @argument("target", help="a DataFrame or ndarray variable, or a file/folder path")
    @argument("-n", "--name", help="snapshot name (default: the variable or file name)")
    @argument("--context", choices=["train", "eval", "test"], help="dataset context for MLflow")
    @argument("-m", "--message", help="a note kept with the version")
    @line_magic
    def snapshot(self, line: str) -> None:
        """Store a version of a DataFrame, an array, a file or a folder (deduplicated, profiled).

        Unchanged content returns the existing version. In a tracked cell (or before one), the
        version is logged to the run as an MLflow dataset input.

        Example::

            In [1]: %snapshot df -n train --context train -m "after cleaning"
            train@v3  rows=10,000  +1.2 MB  digest 5f1c…
        """
        args = parse_argstring(self.snapshot, line)
        from nb_mlops.core.data import snapshot
        from nb_mlops.core.errors import NbMlopsError

        namespace = self.shell.user_ns if self.shell is not None else {}
        target: Any
        if args.target in namespace and not isinstance(namespace[args.target], str | os.PathLike):
            target, name = namespace[args.target], args.name or args.target
        else:
            value = namespace.get(args.target, args.target)
            target = os.path.expanduser(os.fspath(value))
            name = args.name
            if not os.path.lexists(target):
                raise UsageError(f"{args.target!r} is neither a variable nor an existing path")
        try:
            snap = snapshot(
                target, _unquote(name), context=args.context, message=_unquote(args.message)
            )
        except NbMlopsError as exc:
            raise _usage(exc) from exc
        rows = f"rows={snap.rows:,}  " if snap.rows is not None else ""
        if not snap.new:
            state = "unchanged"
        elif snap.durable:
            state = f"+{format_size(snap.bytes_added)}"
        else:  # reading bytes_added would wait for the background write
            state = "new (writing in the background)"
        print(f"{snap.ref}  {rows}{state}  digest {snap.digest[:12]}")

    @magic_arguments()
    @argument("ref", help="NAME or NAME@vN")
    @argument("--as", dest="var", help="variable to assign a DataFrame/array to (default: NAME)")
    @argument("--to", help="where to write a file or folder snapshot")
    @argument("--force", action="store_true", help="overwrite existing files that differ")
    @line_magic
    def restore(self, line: str) -> Any:
        """Bring a data version back exactly: into a variable (DataFrame/array) or onto disk.

        Example::

            In [1]: %restore train@v2 --as train_df
            train@v2 → train_df (10,000 rows)
            In [2]: %restore raw_csv --to data/raw.csv --force
        """
        args = parse_argstring(self.restore, line)
        from nb_mlops.core.data import restore
        from nb_mlops.core.data.names import parse_ref
        from nb_mlops.core.errors import NbMlopsError

        try:
            name, version = parse_ref(args.ref)
            value = restore(name, version, to=args.to, force=args.force)
        except NbMlopsError as exc:
            raise _usage(exc) from exc
        if isinstance(value, os.PathLike):
            print(f"{args.ref} → {value}")
            return None
        var = args.var or name
        if not var.isidentifier():
            raise UsageError(f"{var!r} is not a valid variable name; pass --as VAR")
        if self.shell is not None:
            self.shell.user_ns[var] = value
        rows = f" ({len(value):,} rows)" if hasattr(value, "__len__") else ""
        print(f"{args.ref} → {var}{rows}")
        return None

    @magic_arguments()
    @argument("name", nargs="?", help="show only this name")
    @line_magic
    def snapshots(self, line: str) -> Any:
        """List data versions: names, versions, sizes and profiles (a widget; text without one).

        Example::

            In [1]: %snapshots train
        """
        args = parse_argstring(self.snapshots, line)
        from nb_mlops.core.errors import NbMlopsError
        from nb_mlops.widgets.snapshots import show_snapshots

        try:
            return show_snapshots(args.name)
        except NbMlopsError as exc:
            raise _usage(exc) from exc
