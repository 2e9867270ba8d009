"""AI platform ids → display names and the network domains a device reaches them on.

The domains drive the anchor search (a ``DeviceNetworkEvents`` row whose ``RemoteUrl`` is on
one of them) and the ``PlatformDomain`` hunting column. Sub-domains match (``chat.deepseek.com``
is on ``deepseek.com``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


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


def resolve(platform_id: str | None, platform_name: str | None = None, url: str | None = None) -> Platform:
    """The known platform, or one built from what the event says (its URL's host as domain)."""
    known = PLATFORMS.get((platform_id or "").lower())
    host = _host(url)
    if known:
        if host and not any(host == d or host.endswith("." + d) for d in known.domains):
            return Platform(known.id, known.name, (*known.domains, host))
        return known
    name = platform_name or (platform_id or "unknown AI platform")
    return Platform(platform_id or "unknown", name, (host,) if host else ())


def on_domain(remote: str, domains: tuple[str, ...]) -> bool:
    """Whether a RemoteUrl (bare host or URL) is on one of ``domains`` or a sub-domain."""
    host = _host(remote) or remote.lower()
    return any(host == d or host.endswith("." + d) for d in domains)
