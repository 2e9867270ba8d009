"""Correlation quality (pure): how well Noxys events land on Defender's devices and connections.

An alert only helps the analyst when it sits on the right machine and is anchored on that
machine's own connection to the AI platform (that is what lets Defender fold it into an
incident). Both depend on things outside the connector — whether the device is onboarded, how
Noxys names it, whether Defender logged the connection — so the figures come with the names
that failed and a hint for each, which is what "verify device names match between systems"
needs in practice. Read from ledger entries; the same figures are in the hunting table
(``Correlation``, ``ResolvedBy``, ``AlertDelaySeconds``) for the workbook tile.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.delivery.ledger import Entry, LedgerState
from shared.facts import DEVICE_KEYS, method

TOP = 10
TRIED = {
    "aadDeviceId": "aadDeviceId (exact)",
    "fqdn": "computerDnsName = the FQDN",
    "hostname": "computerDnsName starting with the host name",
    "ip": "the IP address at that time (findbyip)",
}


@dataclass
class Named:
    """One unresolved device name or unanchored platform, how often, and what to do about it."""

    name: str
    events: int
    hint: str


@dataclass
class Correlation:
    events: int = 0  # events delivery has decided on (final), in the period
    resolved: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    anchored: int = 0
    unanchored: int = 0
    median_delay_seconds: float | None = None
    p95_delay_seconds: float | None = None
    unresolved_devices: list[Named] = field(default_factory=list)
    unanchored_platforms: list[Named] = field(default_factory=list)

    @property
    def resolved_share(self) -> float | None:
        return self.resolved / self.events if self.events else None

    @property
    def anchored_share(self) -> float | None:
        return self.anchored / (self.anchored + self.unanchored) if self.anchored + self.unanchored else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "resolved_share": self.resolved_share, "anchored_share": self.anchored_share}


def _delays(entries: list[Entry]) -> list[float]:
    return sorted(
        e.alert_at - e.accepted_at
        for e in entries
        if e.state == LedgerState.ALERT_CREATED and e.alert_at and e.accepted_at and e.alert_at >= e.accepted_at
    )


def device_hint(name: str, keys: str, reason: str) -> str:
    """What to check for a device Defender did not know, from what Noxys sent and what was tried."""
    if not name or "names no device" in reason:
        return "Noxys sent no device for these events: check that its agent or extension reports the device."
    if "ambiguous" in reason:
        return f"{reason}; have Noxys send the host name or the Entra device id, which are unambiguous."
    sent = [k for k in keys.split(",") if k in DEVICE_KEYS]
    tried = "; ".join(TRIED[k] for k in sent) or "nothing usable"
    short = name.split(".")[0].lower()
    return (
        f"Noxys sends `{name}`; tried {tried} — no onboarded machine matches. Search Defender's device "
        f"inventory for `{short}`: not there → onboard it; there under another name → have Noxys send its "
        "FQDN or Entra device id (aadDeviceId)."
    )


def platform_hint(platform: str, reason: str) -> str:
    if "no known domain" in reason or "domain unknown" in reason:  # (the second: rows before 2026-11-30)
        return (
            f"{platform}: its domain is unknown, so there is no connection to anchor on — add it to "
            'PLATFORM_DOMAINS (e.g. {"' + platform.lower() + '": ["llm.acme.internal"]}); an event\'s own URL '
            "is never trusted for this."
        )
    return (
        f"{platform}: {reason}. Check that the devices log DeviceNetworkEvents (network protection on), that "
        "traffic to it does not only go through a proxy Defender sees instead, and clock drift "
        "(ANCHOR_WINDOW_MINUTES)."
    )


def _top(counts: Counter[str], hint: Callable[[str], str]) -> list[Named]:
    return [Named(name or "(none)", n, hint(name)) for name, n in counts.most_common(TOP)]


def summarize(entries: Iterable[Entry]) -> Correlation:
    done = [e for e in entries if e.final and e.state != LedgerState.DEAD_LETTERED]
    out = Correlation(events=len(done))
    methods = Counter(method(e.resolved_by) for e in done if e.machine_id)
    out.resolved = sum(1 for e in done if e.machine_id)
    out.by_method = {m or "earlier attempt": n for m, n in sorted(methods.items())}
    out.anchored = sum(1 for e in done if e.machine_id and (e.anchor_report_id or e.state == LedgerState.COALESCED))
    out.unanchored = sum(1 for e in done if e.state == LedgerState.NO_ANCHOR or (e.via == "graph" and e.machine_id))
    delays = _delays(done)
    if delays:
        out.median_delay_seconds = round(statistics.median(delays), 1)
        out.p95_delay_seconds = round(delays[min(len(delays) - 1, int(0.95 * len(delays)))], 1)
    unresolved = [e for e in done if not e.machine_id]
    names = Counter(e.facts.device_name or "" for e in unresolved)
    keys = {e.facts.device_name or "": (e.facts.device_keys or "", e.reason or "") for e in unresolved}
    out.unresolved_devices = _top(names, lambda n: device_hint(n, *keys[n]))
    lost = [e for e in done if e.state == LedgerState.NO_ANCHOR or (e.via == "graph" and e.machine_id)]
    platforms = Counter(e.facts.platform or "unknown platform" for e in lost)
    why = {e.facts.platform or "unknown platform": e.reason or "" for e in lost}
    out.unanchored_platforms = _top(platforms, lambda p: platform_hint(p, why[p]))
    return out


def _share(part: float | None) -> str:
    return "n/a" if part is None else f"{100 * part:.1f} %"


def render(c: Correlation, period: str) -> list[str]:
    """The figures as lines an operator reads in a terminal (``status`` and ``correlation``)."""
    methods = ", ".join(f"{m} {n}" for m, n in c.by_method.items()) or "none"
    delay = (
        f"median {c.median_delay_seconds:g} s, p95 {c.p95_delay_seconds:g} s"
        if c.median_delay_seconds is not None and c.p95_delay_seconds is not None
        else "n/a"
    )
    lines = [
        f"Correlation quality, {period}: {c.events} event(s) decided",
        f"  resolved to a device: {_share(c.resolved_share)} ({c.resolved}; by {methods})",
        f"  anchored on the device's connection: {_share(c.anchored_share)} ({c.anchored} of "
        f"{c.anchored + c.unanchored} resolved)",
        f"  webhook → alert: {delay}",
    ]
    if c.unresolved_devices:
        lines.append("  unresolved devices (most events first):")
        lines += [f"    {d.name} ({d.events}): {d.hint}" for d in c.unresolved_devices]
    if c.unanchored_platforms:
        lines.append("  unanchored platforms:")
        lines += [f"    {p.name} ({p.events}): {p.hint}" for p in c.unanchored_platforms]
    return lines
