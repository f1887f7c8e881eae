"""The public surface: `nb_mlops.__all__` is exactly what the package offers, and each name works."""

from __future__ import annotations

import subprocess
import sys

import nb_mlops


def test_every_public_name_resolves() -> None:
    for name in nb_mlops.__all__:
        assert getattr(nb_mlops, name) is not None, name


def test_dir_is_all() -> None:
    assert sorted(dir(nb_mlops)) == sorted(nb_mlops.__all__)


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        nb_mlops.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_importing_the_package_loads_nothing_heavy() -> None:
    code = (
        "import sys, nb_mlops, nb_mlops.cli, nb_mlops.magics;"
        "heavy = [m for m in ('mlflow', 'pandas', 'pyarrow', 'papermill', 'sklearn', 'IPython')"
        " if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
