"""What the connector keeps about each event for reporting, correlation and data-subject requests
(pure).

The ledger row of an event is the one place that ties a Noxys event to its person, platform,
device and outcome, so the compliance report, the correlation figures and ``subject export``
read it instead of re-reading queues that have long been drained. Only what those need is kept:
the user, the platform, the device *as Noxys named it* (to say why it did not resolve), the PII
*type codes* (never a value) and the policy action.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import pii, platforms
from shared.events import Envelope

DEVICE_KEYS = ("aadDeviceId", "fqdn", "hostname", "ip")


@dataclass(frozen=True)
class EventFacts:
    user: str = ""  # the e-mail, lower-cased (what a data-subject request names), else the Noxys user id
    user_id: str = ""
    platform: str = ""
    device_name: str = ""
    device_keys: str = ""  # which identifiers Noxys sent, e.g. "hostname,ip": what resolution could try
    pii_types: str = ""  # type codes, comma-separated: "EMAIL,IBAN"
    policy_action: str = ""


def facts(event: Envelope) -> EventFacts:
    it = event.data.interaction if event.kind != "alert" else None
    url = it.content_metadata.url if it and it.content_metadata else None
    device = event.device
    present = (
        dict(zip(DEVICE_KEYS, (device.aad_device_id, device.fqdn, device.hostname, device.ip_address), strict=True))
        if device
        else {}
    )
    user_id = (event.data.interaction.user_id if event.data.interaction else None) or ""
    return EventFacts(
        user=(event.user_email or "").lower() or user_id,
        user_id=user_id,
        platform=platforms.resolve(event.platform_id, it.platform_name if it else None, url).name,
        device_name=device.display_name if device else "",
        device_keys=",".join(k for k, v in present.items() if v),
        pii_types=",".join(pii.type_codes(it.classifications if it else [])),
        policy_action=(event.data.policy.action or "") if event.data.policy else "",
    )


def method(resolved_by: str | None) -> str:
    """The lookup that found the machine ("aadDeviceId", "fqdn", "hostname", "ip"), or "" when none
    did; a cached answer counts as the lookup that first found it."""
    head = (resolved_by or "").removesuffix(" (cached)")
    return head if head in DEVICE_KEYS else ""
