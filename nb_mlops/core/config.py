"""Find the project root and read its configuration (`[tool.nb_mlops]` or `nb_mlops.toml`).

The root is the nearest folder, walking up from the start folder, whose `pyproject.toml` holds a
`[tool.nb_mlops]` table or which holds `nb_mlops.toml`; else the start folder itself. Environment
variables override the store: `NB_MLOPS_TRACKING_URI` / `MLFLOW_TRACKING_URI`, and `NB_MLOPS_ROOT`.
Every key is checked against `config_schema`; the problems found are kept on the `Config`, and
reading its gates raises while there is any (promotion fails closed on a bad setting).
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb_mlops.core.config_schema import problems as schema_problems
from nb_mlops.core.errors import ConfigError

__all__ = ["Config", "find_root", "load_config", "STORE_DIRNAME"]

STORE_DIRNAME = ".nb_mlops"
# a `data_store` that is an object-store URL (s3://bucket/prefix) rather than a folder
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+\Z")


@dataclass(frozen=True)
class Config:
    """The resolved configuration of one project.

    Attributes:
        root: the project root folder.
        config_file: the file the settings came from, or None when there is none.
        tracking_uri: MLflow tracking URI (the embedded SQLite store by default).
        registry_uri: MLflow model-registry URI (the tracking URI by default).
        artifact_root: folder (or URI) where new experiments keep their artifacts.
        experiment: the configured experiment name, or None (then: the notebook's file stem).
        settings: every key of the configuration table, as read (e.g. `gates`).
        problems: one line per configuration problem (unknown key, wrong type, bad threshold),
            each naming the file and the key; empty when the configuration is valid.
    """

    root: Path
    config_file: Path | None
    tracking_uri: str
    registry_uri: str
    artifact_root: str
    experiment: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise the configuration's problems, if any.

        Raises:
            ConfigError: the first problem (and how many more), and how to list them all.
        """
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise ConfigError(
                f"{self.problems[0]}{more}; fix the configuration (`nb-mlops config --check` "
                "lists every problem): promotion refuses until it is valid"
            )

    @property
    def store_dir(self) -> Path:
        """`<root>/.nb_mlops`: the embedded store's folder (data, runs and locks live here always)."""
        return self.root / STORE_DIRNAME

    @property
    def data_store_url(self) -> str | None:
        """The object-store URL of a shared data store (`s3://bucket/prefix`), else None."""
        value = str(self.settings.get("data_store", ""))
        return value.rstrip("/") if _URL.match(value) else None

    @property
    def data_store(self) -> Path:
        """The data store folder; for an object-store URL, this project's local cache of it."""
        url = self.data_store_url
        if url is not None:
            safe = re.sub(r"[^A-Za-z0-9._-]+", "_", url.partition("://")[2])[:80]
            return self.store_dir / "data-cache" / safe
        return Path(self.settings.get("data_store", self.store_dir / "data"))

    @property
    def runs_dir(self) -> Path:
        return self.store_dir / "runs"

    @property
    def locks_dir(self) -> Path:
        return self.store_dir / "locks"

    @property
    def db_path(self) -> Path:
        return self.store_dir / "mlflow.db"

    @property
    def is_embedded(self) -> bool:
        """True when tracking goes to the embedded SQLite file under `.nb_mlops/`."""
        return self.tracking_uri == _sqlite_uri(self.db_path)

    @property
    def gates(self) -> dict[str, Any]:
        """The gates table. Fails closed: raises ConfigError while the configuration has any
        problem, so a misspelt or misshapen setting never reads as "no gates"."""
        self.check()
        return dict(self.settings.get("gates", {}))

    @property
    def trusted_model_modules(self) -> tuple[str, ...] | None:
        """`trusted_model_modules`: the modules (or exact type names) whose types a stored model
        may ask its loader to trust; None when unset (then a built-in default applies)."""
        value = self.settings.get("trusted_model_modules")
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise ConfigError(
                f"{self.config_file}: `trusted_model_modules` must be a non-empty list of module names, "
                f'e.g. ["sklearn", "numpy", "myproject"], got {value!r}'
            )
        return tuple(v.strip() for v in value)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape printed by `nb-mlops config --json`."""
        return {
            "root": str(self.root),
            "config_file": str(self.config_file) if self.config_file else None,
            "tracking_uri": self.tracking_uri,
            "registry_uri": self.registry_uri,
            "artifact_root": self.artifact_root,
            "data_store": self.data_store_url or str(self.data_store),
            "runs_dir": str(self.runs_dir),
            "experiment": self.experiment,
            "embedded": self.is_embedded,
            "gates": self.settings.get("gates", {}),
            "problems": list(self.problems),
        }


def _sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


# path → ((mtime_ns, size, inode), parsed table): every tracked cell resolves the configuration
_parsed: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        info = path.stat()
        mark = (info.st_mtime_ns, info.st_size, info.st_ino)
        hit = _parsed.get(path)
        if hit is not None and hit[0] == mark:
            return copy.deepcopy(hit[1])
        with path.open("rb") as fh:
            table = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the file or remove it") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    _parsed[path] = (mark, table)
    return copy.deepcopy(table)


def find_root(start: Path | str | None = None) -> tuple[Path, Path | None, dict[str, Any]]:
    """Walk up from `start` to the project root.

    Returns:
        (root, config file or None, the nb_mlops settings table).
    """
    here = Path(start or os.getcwd()).resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        own = folder / "nb_mlops.toml"
        if own.is_file():
            return folder, own, _read_toml(own)
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            table = _read_toml(pyproject).get("tool", {}).get("nb_mlops")
            if isinstance(table, dict):
                return folder, pyproject, table
    return here, None, {}


def load_config(start: Path | str | None = None) -> Config:
    """Resolve the configuration for the project containing `start` (default: the cwd).

    `NB_MLOPS_ROOT` pins the root (pipeline steps run from staging folders use it).

    Example:
        >>> cfg = load_config()
        >>> cfg.tracking_uri.startswith("sqlite:///") or cfg.tracking_uri
        True
    """
    pinned = os.environ.get("NB_MLOPS_ROOT")
    root, source, settings = find_root(pinned or start)
    if pinned:
        root = Path(pinned).resolve()
    store_dir = root / STORE_DIRNAME
    tracking_uri = (
        os.environ.get("NB_MLOPS_TRACKING_URI")
        or os.environ.get("MLFLOW_TRACKING_URI")
        or _setting_str(settings, "tracking_uri", source)
        or _sqlite_uri(store_dir / "mlflow.db")
    )
    registry_uri = (
        os.environ.get("NB_MLOPS_REGISTRY_URI")
        or os.environ.get("MLFLOW_REGISTRY_URI")
        or _setting_str(settings, "registry_uri", source)
        or tracking_uri
    )
    artifact_root = _setting_str(settings, "artifact_root", source) or str(store_dir / "artifacts")
    return Config(
        root=root,
        config_file=source,
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        artifact_root=artifact_root,
        experiment=_setting_str(settings, "experiment", source),
        settings=settings,
        problems=_problems(settings, source),
    )


def _problems(settings: dict[str, Any], source: Path | None) -> tuple[str, ...]:
    if source is None:
        return ()
    prefix = "tool.nb_mlops." if source.name == "pyproject.toml" else ""
    return tuple(f"{source}: {line}" for line in schema_problems(settings, prefix))


def _setting_str(settings: dict[str, Any], key: str, source: Path | None) -> str | None:
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: `{key}` must be a non-empty string, got {value!r}")
    return value
