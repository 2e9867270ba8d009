"""AI platform ids → display names and the network domains a device reaches them on.

The domains drive the anchor search (a ``DeviceNetworkEvents`` row whose ``RemoteUrl`` is on
one of them) and the ``PlatformDomain`` hunting column. Sub-domains match (``chat.deepseek.com``
is on ``deepseek.com``).

An event is authentic, not authoritative: its ``content_metadata.url`` never adds a domain to
anchor on. The domains are the catalogue's, plus the operator's own (``PLATFORM_DOMAINS``, for an
in-house or proxied AI platform); a violation "on ChatGPT" reported with ``https://google.com/`` is
anchored on the device's ChatGPT traffic, and a platform neither the catalogue nor the operator
knows has nothing to anchor on (``no_anchor``, with the setting named), rather than a host one
event chose. The reported host is still shown where it only informs (the hunting row). What
``block_domain`` may block is decided separately and more strictly
(:func:`shared.response.rules.block_target`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

_REGISTRABLE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$")


@dataclass(frozen=True)
class Platform:
    id: str
    name: str
    domains: tuple[str, ...]


PLATFORMS: dict[str, Platform] = {
    p.id: p
    for p in (
        Platform("chatgpt", "ChatGPT", ("chatgpt.com", "chat.openai.com", "openai.com")),
        Platform("claude", "Claude", ("claude.ai", "anthropic.com")),
        Platform("gemini", "Gemini", ("gemini.google.com", "bard.google.com")),
        Platform("deepseek", "DeepSeek", ("deepseek.com",)),
        Platform("perplexity", "Perplexity", ("perplexity.ai",)),
        Platform("mistral", "Mistral Le Chat", ("chat.mistral.ai", "mistral.ai")),
        Platform(
            "copilot",
            "Microsoft Copilot",
            ("copilot.microsoft.com", "copilot.cloud.microsoft", "m365.cloud.microsoft"),
        ),
        Platform("poe", "Poe", ("poe.com",)),
        Platform("huggingchat", "HuggingChat", ("huggingface.co",)),
        Platform("grok", "Grok", ("grok.com", "x.ai")),
        Platform("meta", "Meta AI", ("meta.ai",)),
    )
}


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname
    except ValueError:
        return None
    return host.lower() if host else None


def registrable(host: str | None) -> str | None:
    """``host`` when it looks like a registrable domain name (see the module doc), else None."""
    host = (host or "").rstrip(".")
    return host if len(host) <= 253 and _REGISTRABLE.match(host) else None


def resolve(
    platform_id: str | None, platform_name: str | None = None, extra: Mapping[str, Sequence[str]] | None = None
) -> Platform:
    """The catalogued platform with the operator's extra domains (``PLATFORM_DOMAINS``), or one
    named by the event whose only domains are the operator's."""
    key = (platform_id or "").lower()
    added = tuple((extra or {}).get(key, ()))
    known = PLATFORMS.get(key)
    if known:
        return Platform(known.id, known.name, known.domains + added) if added else known
    name = platform_name or (platform_id or "unknown AI platform")
    return Platform(platform_id or "unknown", name, added)


def reported_host(url: str | None) -> str | None:
    """The registrable host an event's URL names: shown (hunting), never anchored or blocked on."""
    return registrable(_host(url))


def on_domain(remote: str, domains: tuple[str, ...]) -> bool:
    """Whether a RemoteUrl (bare host or URL) is on one of ``domains`` or a sub-domain."""
    host = _host(remote) or remote.lower()
    return any(host == d or host.endswith("." + d) for d in domains)
