"""`python -m nb_mlops.cli`: the same as the `nb-mlops` command."""

from nb_mlops.cli import run

run()
