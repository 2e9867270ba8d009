"""The composition root: builds the adapters from settings once per process, lazily.

Triggers ask here for a Defender client instead of constructing one, so a worker reuses one
HTTP session and one token cache, nothing is built at import time, and tests swap settings by
calling :func:`reset`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from shared.config import get_settings, reset_settings

if TYPE_CHECKING:
    from shared.defender.client import DefenderClient


@functools.cache
def defender_client() -> DefenderClient:
    from shared.defender.auth import CredentialTokenProvider, build_credential
    from shared.defender.client import DefenderClient

    settings = get_settings()
    tokens = CredentialTokenProvider(build_credential(settings), settings.defender_scope)
    return DefenderClient(settings.defender_api_url, tokens, timeout=settings.http_timeout_seconds)


def reset() -> None:
    """Forget settings and every cached adapter (the environment changed)."""
    from shared import storage

    reset_settings()
    defender_client.cache_clear()
    storage.reset_clients()
