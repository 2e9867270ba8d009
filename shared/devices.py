"""Which Defender machine an event's device is (pure choices; the lookups are injected).

Noxys knows a device by what its agent sees (hostname, maybe FQDN, Entra device id, IP);
Defender knows machines by id. Lookups go from the most to the least specific identifier, and
when one name matches several machine records (re-imaged or renamed devices) the choice is:
an ``aadDeviceId`` match, then ``Active`` machines, then the most recent ``lastSeen``.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.events import Device

_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
MACHINE_ID = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Lookup:
    """One ``$filter`` query and how to keep only the records that really match."""

    by: str
    odata_filter: str
    keep: Callable[[dict[str, Any]], bool]


def _field_is(name: str, value: str, *, short: bool = False) -> Callable[[dict[str, Any]], bool]:
    """A predicate: the machine's ``name`` (lower-cased, optionally only its first label) is ``value``."""

    def keep(machine: dict[str, Any]) -> bool:
        have = str(machine.get(name) or "").lower()
        return (have.split(".")[0] if short else have) == value

    return keep


def odata_literal(text: str) -> str:
    """A string literal for a Defender API ``$filter`` (no SDK quotes those for us: the one place
    that does it by hand; Table queries pass ``parameters=`` instead)."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Ids:
    """A device's identifiers as keys: trimmed, case-folded and validated, or empty.

    Every use — the cache key, the lookups, the identity proof of a destructive action — goes
    through this one normalisation, so ``"GINA-PC "`` is GINA-PC (not an unknown device whose
    "no machine" would be cached under GINA-PC's key), and a padded or malformed identifier is
    simply absent rather than a different device.
    """

    aad: str = ""
    fqdn: str = ""
    hostname: str = ""
    ip: str = ""

    def key(self) -> str:
        return "|".join((self.aad, self.fqdn, self.hostname, self.ip))

    def as_dict(self) -> dict[str, str]:
        return {
            k: v for k, v in (("aad", self.aad), ("fqdn", self.fqdn), ("hostname", self.hostname), ("ip", self.ip)) if v
        }


def _name(text: str | None) -> str:
    name = (text or "").strip().rstrip(".").casefold()
    return name if _HOSTNAME.match(name) and name.isascii() else ""


def ids_of(device: Device) -> Ids:
    try:
        aad = str(uuid.UUID((device.aad_device_id or "").strip())) if device.aad_device_id else ""
    except ValueError:
        aad = ""
    fqdn = _name(device.fqdn)
    fqdn = fqdn if "." in fqdn else ""
    host = _name(device.hostname) or (fqdn.split(".")[0] if fqdn else "")
    return Ids(aad, fqdn, host, valid_ip(device.ip_address) or "")


def lookups(device: Device) -> list[Lookup]:
    """The ordered machine queries for a device; malformed identifiers are skipped, not sent."""
    out: list[Lookup] = []
    ids = ids_of(device)
    if ids.aad:
        aad = ids.aad
        out.append(Lookup("aadDeviceId", f"aadDeviceId eq {odata_literal(aad)}", _field_is("aadDeviceId", aad)))
    if ids.fqdn:
        fqdn = ids.fqdn
        out.append(Lookup("fqdn", f"computerDnsName eq {odata_literal(fqdn)}", _field_is("computerDnsName", fqdn)))
    if ids.hostname:
        short = ids.hostname.split(".")[0]
        out.append(
            Lookup(
                "hostname",
                f"startswith(computerDnsName,{odata_literal(short)})",
                _field_is("computerDnsName", short, short=True),
            )
        )
    return out


def choose(candidates: list[dict[str, Any]], device: Device) -> dict[str, Any] | None:
    """Pick one machine among matching records (see module doc for the order)."""
    usable = [m for m in candidates if MACHINE_ID.match(str(m.get("id") or ""))]
    if not usable:
        return None
    if device.aad_device_id:
        aad = device.aad_device_id.lower()
        by_aad = [m for m in usable if str(m.get("aadDeviceId") or "").lower() == aad]
        usable = by_aad or usable

    def rank(m: dict[str, Any]) -> tuple[int, str]:
        return (1 if m.get("healthStatus") == "Active" else 0, str(m.get("lastSeen") or ""))

    return max(usable, key=rank)


class MachineApi(Protocol):
    def list_machines(self, odata_filter: str | None = None, top: int | None = None) -> list[dict[str, Any]]: ...
    def find_machines_by_ip(self, ip: str, when: datetime) -> list[dict[str, Any]]: ...


def valid_ip(text: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address((text or "").strip()))
    except ValueError:
        return None


def resolve(device: Device, api: MachineApi, *, when: datetime, now: datetime) -> tuple[dict[str, Any] | None, str]:
    """The chosen machine (or None) and how it was found (or why not), trying each lookup in order.

    The IP comes last and only within the 30 days ``findbyip`` covers; several *different*
    machines behind one IP at that time (NAT, DHCP reuse) is ambiguous, and guessing would put
    the alert on the wrong person's device, so it resolves to nothing.
    """
    for lookup in lookups(device):
        found = [m for m in api.list_machines(lookup.odata_filter) if lookup.keep(m)]
        chosen = choose(found, device)
        if chosen:
            return chosen, lookup.by
    ip = ids_of(device).ip
    if ip and now - when < timedelta(days=30):
        seen = [m for m in api.find_machines_by_ip(ip, when) if MACHINE_ID.match(str(m.get("id") or ""))]
        if len({m["id"] for m in seen}) == 1:
            return seen[0], "ip"
        if seen:
            return None, f"ambiguous: {len({m['id'] for m in seen})} machines used {ip} at that time"
    return None, "no machine matches"
