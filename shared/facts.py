"""What the connector keeps about each event for reporting, correlation and data-subject requests
(pure).

The ledger row of an event is the one place that ties a Noxys event to its person, platform,
device and outcome, so the compliance report, the correlation figures and ``subject export``
read it instead of re-reading queues that have long been drained. Only what those need is kept:
the user, the platform, the device *as Noxys named it* (to say why it did not resolve), the PII
*type codes* (never a value) and the policy action.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from shared import pii, platforms
from shared.events import Envelope

DEVICE_KEYS = ("aadDeviceId", "fqdn", "hostname", "ip")


def fold(text: str) -> str:
    """The one form a person's identifier is kept and compared in, on write and on search: NFKC,
    then lower case (``Alice@ACME.fr`` and ``alice@acme.fr`` are one mailbox). Not ``casefold``:
    it folds ``ß`` into ``ss`` (and the final sigma into sigma), so ``straße@`` and ``strasse@`` — two
    mailboxes — would be one person, and erasing one would erase the other. The webhook refuses
    identifiers that NFKC alone changes, so a look-alike (U+212A KELVIN SIGN) never folds into
    somebody else's name here."""
    return unicodedata.normalize("NFKC", text).lower()


@dataclass(frozen=True)
class EventFacts:
    user: str = ""  # the person, for reports and risk windows: the e-mail, else the Noxys user id
    user_id: str = ""  # the Noxys user id; e-mail and user id are separate namespaces (``email``)
    email: str = ""  # what a data-subject request by e-mail matches; "" when the event named none
    platform: str = ""
    device_name: str = ""
    device_keys: str = ""  # which identifiers Noxys sent, e.g. "hostname,ip": what resolution could try
    pii_types: str = ""  # type codes, comma-separated: "EMAIL,IBAN"
    policy_action: str = ""
    policy_id: str = ""  # the Noxys policy (id and name, never the prompt), for the weekly review
    policy_name: str = ""


def facts(event: Envelope) -> EventFacts:
    it = event.data.interaction if event.kind != "alert" else None
    device = event.device
    present = (
        dict(zip(DEVICE_KEYS, (device.aad_device_id, device.fqdn, device.hostname, device.ip_address), strict=True))
        if device
        else {}
    )
    user_id = fold((event.data.interaction.user_id if event.data.interaction else None) or "")
    email = fold(event.user_email or "")
    return EventFacts(
        user=email or user_id,
        user_id=user_id,
        email=email,
        platform=platforms.resolve(event.platform_id, it.platform_name if it else None).name,
        device_name=device.display_name if device else "",
        device_keys=",".join(k for k, v in present.items() if v),
        pii_types=",".join(pii.type_codes(it.classifications if it else [])),
        policy_action=(event.data.policy.action or "") if event.data.policy else "",
        policy_id=(event.data.policy.id or "") if event.data.policy else "",
        policy_name=(event.data.policy.name or "") if event.data.policy else "",
    )


def method(resolved_by: str | None) -> str:
    """The lookup that found the machine ("aadDeviceId", "fqdn", "hostname", "ip"), or "" when none
    did; a cached answer counts as the lookup that first found it."""
    head = (resolved_by or "").removesuffix(" (cached)")
    return head if head in DEVICE_KEYS else ""
