"""Who may promote, roll back and approve: `[tool.nb_mlops.promotion]`, read and enforced.

`promoters` limits who may promote and roll back; `approvers` who may approve another user's
promotion request; `require_approval = true` turns a promotion into a request. The settings are
checked by the configuration schema; reading them here fails closed while any key is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from nb_mlops.core.config import Config
from nb_mlops.core.errors import PermissionDenied

__all__ = ["Access", "access", "check_approver", "check_promoter"]


@dataclass(frozen=True)
class Access:
    """The `promotion` table: `promoters` None means anyone may promote."""

    promoters: tuple[str, ...] | None = None
    approvers: tuple[str, ...] = ()
    require_approval: bool = False


def access(cfg: Config) -> Access:
    """The access settings of `cfg` (raises ConfigError while the configuration has a problem,
    so a misspelt key never reads as "anyone may promote")."""
    cfg.check()
    table = cfg.settings.get("promotion") or {}
    promoters = table.get("promoters")
    return Access(
        promoters=None if promoters is None else tuple(promoters),
        approvers=tuple(table.get("approvers") or ()),
        require_approval=bool(table.get("require_approval", False)),
    )


def _where(cfg: Config, key: str) -> str:
    name = cfg.config_file.name if cfg.config_file is not None else "pyproject.toml"
    prefix = "promotion" if name == "nb_mlops.toml" else "tool.nb_mlops.promotion"
    return f"`{key}` of [{prefix}] in {name}"


def check_promoter(cfg: Config, who: str) -> Access:
    """Raise PermissionDenied unless `who` may promote and roll back; return the settings."""
    found = access(cfg)
    if found.promoters is not None and who not in found.promoters:
        raise PermissionDenied(
            f"user {who!r} may not promote or roll back: not in {_where(cfg, 'promoters')}; "
            "add the user there or ask a promoter"
        )
    return found


def check_approver(cfg: Config, who: str) -> Access:
    """Raise PermissionDenied unless `who` may approve or reject requests; return the settings."""
    found = access(cfg)
    if who not in found.approvers:
        raise PermissionDenied(
            f"user {who!r} may not approve or reject promotion requests: not in "
            f"{_where(cfg, 'approvers')}; add the user there or ask an approver"
        )
    return found
