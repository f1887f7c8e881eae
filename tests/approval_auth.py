"""A site's own identity provider and Authorizer, as a deployment would configure them
(`ServerApp.identity_provider_class`, `ServerApp.authorizer_class`), for the approvals tests."""

from __future__ import annotations

from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth import Authorizer, IdentityProvider
from jupyter_server.auth.identity import User

DENIED = ("nb_mlops:approve", "nb_mlops:promote")


class HeaderUsers(IdentityProvider):  # type: ignore[misc]
    """Token-authenticated requests act as the user named in `X-Test-User`."""

    async def get_user(self, handler: Any) -> Any:
        user = await ensure_async(super().get_user(handler))
        name = handler.request.headers.get("X-Test-User")
        return User(username=name, name=name) if user is not None and name else user


class NoApprovingForMallory(Authorizer):  # type: ignore[misc]
    """The site's rule: mallory may neither approve nor promote, whatever the project says."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return not (resource in DENIED and user.username == "mallory")
