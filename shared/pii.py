"""PII type codes → words a SOC analyst reads ("Email address"), never the value itself."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from shared.events import Classification

LABELS: dict[str, str] = {
    "EMAIL": "Email address",
    "PHONE": "Phone number",
    "CREDIT_CARD": "Credit card number",
    "IBAN": "IBAN (bank account)",
    "SWIFT": "SWIFT/BIC code",
    "SSN": "US Social Security number",
    "NIR": "French social security number (NIR)",
    "PASSPORT": "Passport number",
    "DRIVER_LICENSE": "Driver licence number",
    "NATIONAL_ID": "National identity number",
    "TAX_ID": "Tax identification number",
    "API_KEY": "API key or secret",
    "PASSWORD": "Password",
    "PRIVATE_KEY": "Private key",
    "ACCESS_TOKEN": "Access token",
    "PERSON": "Person name",
    "ADDRESS": "Postal address",
    "LOCATION": "Location",
    "DATE_OF_BIRTH": "Date of birth",
    "IP_ADDRESS": "IP address",
    "MEDICAL": "Health information",
    "SOURCE_CODE": "Source code",
}

_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def label(code: str) -> str:
    """A readable label; unknown well-formed codes are spelled out, anything else is 'Other'.

    The type field comes from the sender, so only a code-shaped string is ever echoed: a
    misplaced value in ``type`` must not leak through the label.
    """
    upper = code.strip().upper()
    if upper in LABELS:
        return LABELS[upper]
    if _CODE.match(upper):
        return upper.replace("_", " ").capitalize()
    return "Other sensitive data"


def type_codes(classifications: Iterable[Classification]) -> list[str]:
    """Distinct normalised type codes in first-seen order (what the hunting table stores)."""
    seen: dict[str, None] = {}
    for c in classifications:
        upper = c.type.strip().upper()
        seen.setdefault(upper if _CODE.match(upper) else "OTHER", None)
    return list(seen)


def summarise(classifications: Iterable[Classification]) -> list[str]:
    """'Email address (2, max score 0.98)' per type, highest count first."""
    items = list(classifications)
    counts = Counter(label(c.type) for c in items)
    best: dict[str, float] = {}
    for c in items:
        if c.score is not None:
            key = label(c.type)
            best[key] = max(best.get(key, 0.0), c.score)
    out = []
    for name, n in counts.most_common():
        score = f", max score {best[name]:.2f}" if name in best else ""
        out.append(f"{name} ({n}{score})")
    return out
