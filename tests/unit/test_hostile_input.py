"""Correctly signed but hostile bodies: every one is a 4xx naming the field, never a crash later.

Each class from the hostile-input review has its test here at the parser and key level; the
webhook-level tests (status codes, nothing queued) are in tests/integration/test_hostile_webhook.py.
"""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import logsafe
from shared.events import MAX_CLASSIFICATIONS, MAX_INTERACTION_IDS_CHARS, InvalidEvents, parse_events
from shared.storage import table_key
from shared.tasks import QueuedEvent
from tests.support import sample

NOW = datetime(2026, 3, 20, 18, 0, tzinfo=UTC)


def refused(body: bytes, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidEvents) as exc:
        parse_events(body, **kwargs)
    return [(e.field, e.message) for e in exc.value.errors]


def doc() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(sample("policy_violated"))
    return result


# ---------------------------------------------------------------- 1. four ways to a 500
def test_deep_nesting_is_a_body_error() -> None:
    body = b'{"id": "evt_1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert refused(body) == [("body", "nested too deeply")]


def test_number_with_thousands_of_digits_is_a_body_error() -> None:
    body = b'{"id": "evt_1", "n": ' + b"9" * 5000 + b"}"
    assert refused(body) == [("body", "a number has too many digits")]


def test_timestamp_that_overflows_utc_names_the_field() -> None:
    d = doc()
    d["created_at"] = "0001-01-01T00:00:00+14:00"
    (problem,) = refused(json.dumps(d).encode())
    assert problem[0] == "created_at" and "out of range" in problem[1]


@pytest.mark.parametrize("path", [("id",), ("data", "policy", "name"), ("data", "interaction", "user_email")])
def test_lone_surrogate_names_the_field(path: tuple[str, ...]) -> None:
    d = doc()
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "abc\ud800"
    body = json.dumps(d).encode()  # json.dumps writes the \ud800 escape, as a hostile sender would
    assert b"\\ud800" in body
    (problem,) = refused(body)
    assert problem[0] == ".".join(path) and ("surrogate" in problem[1] or "unicode" in problem[1])


def test_every_accepted_event_serialises_for_the_queue() -> None:
    """The property the surrogate case broke: what validates can be written to the queue."""
    d = doc()
    d["data"]["policy"]["name"] = "Politique données 🇫🇷 \u200b"
    (event,) = parse_events(json.dumps(d).encode())
    assert QueuedEvent.new(event, NOW).to_text()


# ---------------------------------------------------------------- 2. sizes
@pytest.mark.parametrize(
    ("path", "limit"),
    [
        (("data", "policy", "name"), 1024),
        (("data", "interaction", "device", "hostname"), 255),
        (("tenant_id",), 200),
    ],
)
def test_each_kept_field_has_a_maximum_length(path: tuple[str, ...], limit: int) -> None:
    d = doc()
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "a" * limit
    parse_events(json.dumps(d).encode())  # at the limit: fine
    node[path[-1]] = "a" * (limit + 1)
    (problem,) = refused(json.dumps(d).encode())
    assert problem[0] == ".".join(path) and str(limit) in problem[1]


def _widest(kind: str) -> dict[str, Any]:
    """An event of ``kind`` with every kept field at its maximum, in four-byte characters that
    identifiers accept (an emoji: NFKC leaves it alone), and both payloads present."""
    wide = "😀"
    device = {"hostname": wide * 255, "fqdn": wide * 255, "aad_device_id": wide * 64, "ip_address": wide * 45}
    interaction = {
        "id": wide * 200, "platform_id": wide * 64, "platform_name": wide * 100, "interaction_type": wide * 32,
        "content_hash": wide * 128, "classification_level": wide * 32, "direction": wide * 16, "source": wide * 32,
        "content_metadata": {"url": "https://" + ".".join(["a" * 63] * 3 + ["b" * 61]) + "/c?q=" + "x" * 7900,
                             "model": wide * 100},
        "classifications": [{"type": wide * 64, "score": 0.123456789012345}] * MAX_CLASSIFICATIONS,
        "risk_score": 0.123456789012345, "user_id": wide * 200, "user_email": wide * 320,
        "device": {**device, "os": wide * 100}, "occurred_at": "2026-03-20T17:00:00.123456Z",
    }  # fmt: skip
    alert = {
        "id": wide * 200, "title": wide * 500, "severity": wide * 16, "description": wide * 4000,
        "risk_score": 0.123456789012345, "user_email": wide * 320, "device": device, "platform_id": wide * 64,
        "interaction_ids": [wide * 30] * 100, "created_at": "2026-03-20T17:00:00.123456Z",
    }  # fmt: skip
    return {
        "id": wide * 200, "type": kind + wide * (100 - len(kind)), "created_at": "2026-03-20T17:00:00.123456Z",
        "tenant_id": wide * 200,
        "data": {"interaction": interaction, "policy": {"id": wide * 200, "name": wide * 1024, "action": wide * 32},
                 "alert": alert},
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["interaction.", "alert."])
def test_the_largest_valid_event_fits_a_queue_message(kind: str) -> None:
    """Every field and list at its maximum, in 4-byte characters: still under 64 KiB."""
    (event,) = parse_events(json.dumps(_widest(kind)).encode())
    text = QueuedEvent.new(event, NOW).to_text()
    assert 4 * ((len(text.encode()) + 2) // 3) <= 64 * 1024


def test_a_list_over_its_bound_is_a_400_not_a_413() -> None:
    """The issue's case: 100 interaction ids of 200 emoji made a 'valid' event of 139,864 bytes."""
    d = json.loads(sample("alert_critical"))
    d["data"]["alert"]["interaction_ids"] = ["😀" * 200] * 100
    (problem,) = refused(json.dumps(d).encode())
    assert problem == ("data.alert.interaction_ids", f"at most {MAX_INTERACTION_IDS_CHARS} characters in all")
    d = json.loads(sample("policy_violated"))
    d["data"]["interaction"]["classifications"] *= MAX_CLASSIFICATIONS + 1
    (problem,) = refused(json.dumps(d).encode())
    assert problem[0] == "data.interaction.classifications" and str(MAX_CLASSIFICATIONS) in problem[1]


# ---------------------------------------------------------------- 3. keys
def test_ids_with_a_long_common_prefix_get_different_keys() -> None:
    base = "evt/" + "x" * 300
    a, b = table_key(base + "A"), table_key(base + "B")
    assert a != b
    assert len(a.encode("utf-16-le")) <= 1024 and len(b.encode("utf-16-le")) <= 1024


def test_short_ids_stay_readable_and_a_digest_key_cannot_equal_one() -> None:
    assert table_key("evt_01JQ8X4M2Z6N0K3T5V7W9Y1B3D") == "evt_01JQ8X4M2Z6N0K3T5V7W9Y1B3D"
    assert table_key("a/b#c?d%e") == "a%2Fb%23c%3Fd%25e"
    long = "z" * 500
    forged = table_key(long)  # a sender who sends the digest form as an id gets it escaped
    assert table_key(forged) != forged and "%25H" in table_key(forged)


def test_astral_characters_count_double_towards_the_key_limit() -> None:
    key = table_key("😀" * 300)
    assert len(key.encode("utf-16-le")) <= 1024


def test_envelope_ids_are_bounded_at_validation() -> None:
    d = doc()
    d["id"] = "e" * 201
    assert refused(json.dumps(d).encode())[0][0] == "id"


# ---------------------------------------------------------------- 4. impossible dates
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("created_at", "9999-12-31T23:59:59Z"),
        ("created_at", "1970-01-01T00:00:00Z"),
        ("occurred_at", "2026-03-22T18:00:01Z"),  # 48 h ahead of the receiver
        ("occurred_at", "2025-12-01T00:00:00Z"),  # older than 90 days
    ],
)
def test_dates_outside_the_window_are_refused(field: str, value: str) -> None:
    d = doc()
    if field == "created_at":
        d["created_at"] = value
        path = "created_at"
    else:
        d["data"]["interaction"]["occurred_at"] = value
        path = "data.interaction.occurred_at"
    (problem,) = refused(json.dumps(d).encode(), now=NOW)
    assert problem[0] == path and "90 days before and 24 hours after" in problem[1]


def test_window_edges_are_accepted() -> None:
    d = doc()
    d["created_at"] = (NOW + timedelta(hours=24)).isoformat()
    d["data"]["interaction"]["occurred_at"] = (NOW - timedelta(days=90)).isoformat()
    assert parse_events(json.dumps(d).encode(), now=NOW)


# ---------------------------------------------------------------- 5. log forging
def test_identifiers_with_control_characters_are_refused() -> None:
    d = doc()
    d["data"]["interaction"]["device"]["hostname"] = "PC\n2026-03-20 18:00:00 CRITICAL forged"
    (problem,) = refused(json.dumps(d).encode())
    assert problem == ("data.interaction.device.hostname", "must not contain control characters")


def test_display_text_has_its_control_characters_replaced() -> None:
    d = doc()
    d["data"]["policy"]["name"] = "Block\nPII\x00 now\u2028!"
    (event,) = parse_events(json.dumps(d).encode())
    assert event.data.policy is not None and event.data.policy.name == "Block PII  now !"


def test_log_records_cannot_forge_a_line_or_write_raw_controls() -> None:
    logsafe.install()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.forging")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("device %s not found", "PC\nCRITICAL forged line\x00\x1b[31m")
        try:
            raise ValueError("bad host PC\nCRITICAL forged from an exception")
        except ValueError:
            logger.exception("delivery failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert not any(line.startswith("CRITICAL") for line in lines)
    assert lines[0] == "WARNING device PC\\nCRITICAL forged line\\x00\\x1b[31m not found"
    assert "\x00" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert lines[-1] == "ValueError: bad host PC\\nCRITICAL forged from an exception"


# ---------------------------------------------------------------- 4. URLs: where, never what
def _with_url(url: str) -> bytes:
    d = doc()
    d["data"]["interaction"]["content_metadata"]["url"] = url
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://chatgpt.com/search?q=my+salary+is+42k#frag", "https://chatgpt.com"),
        ("https://user:hunter2@Chat.Mistral.AI:8443/chat/ab12?prompt=x", "https://chat.mistral.ai"),
        ("chatgpt.com/c/42?q=secret", "chatgpt.com"),
        ("https://bücher.example/?q=x", "https://xn--bcher-kva.example"),
        ("https://10.1.2.3/api?q=x", "https://10.1.2.3"),
        ("https://chatgpt.com/?q=\u00a0ﬁ\u200b\u202e", "https://chatgpt.com"),  # what is dropped is not judged
    ],
)
def test_a_url_keeps_its_scheme_and_host_only(url: str, kept: str) -> None:
    (event,) = parse_events(_with_url(url))
    assert event.data.interaction and event.data.interaction.content_metadata
    assert event.data.interaction.content_metadata.url == kept
    for secret in ("salary", "hunter2", "secret", "ab12", "8443", "frag", "q=", "/c/"):
        assert secret not in QueuedEvent.new(event, NOW).to_text()


@pytest.mark.parametrize(
    "url",
    ["https://a_b.example/", "https://a b.example/", "https://a%2eb.example/", "https://evil.example\\@good.example/",
     "https://[2001:db8::1]/", "https:///nohost", "https://" + "a" * 64 + ".example/", "https://-/"],
)  # fmt: skip
def test_a_url_host_the_anchor_search_would_refuse_is_a_400_naming_the_field(url: str) -> None:
    """These used to be accepted (202), fail delivery five times and stay dead-lettered for good."""
    from shared.anchor import hunting_query

    (problem,) = refused(_with_url(url))
    assert problem[0] == "data.interaction.content_metadata.url"
    # and what is accepted, the anchor search accepts too
    (event,) = parse_events(_with_url("https://xn--bcher-kva.example/x"))
    assert event.data.interaction and event.data.interaction.content_metadata
    host = str(event.data.interaction.content_metadata.url).split("//")[1]
    assert hunting_query("a" * 40, (host,), NOW, timedelta(minutes=5))


# ---------------------------------------------------------------- 5. invisible and look-alike characters
@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\u2066", "\ufeff", "\U000e0041"])
@pytest.mark.parametrize(
    "path",
    [("id",), ("data", "interaction", "user_email"), ("data", "interaction", "device", "hostname"),
     ("data", "interaction", "user_id")],
)  # fmt: skip
def test_invisible_characters_are_refused_in_identifiers(char: str, path: tuple[str, ...]) -> None:
    d = doc()
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = f"ali{char}ce@acme.fr"
    (problem,) = refused(json.dumps(d).encode())
    assert problem[0] == ".".join(path) and f"U+{ord(char):04X}" in problem[1]


def test_invisible_characters_are_removed_from_labels() -> None:
    d = doc()
    d["data"]["policy"]["name"] = "Block \u202egnp.exe\u202c PII\u200b"
    (event,) = parse_events(json.dumps(d).encode())
    assert event.data.policy and event.data.policy.name == "Block gnp.exe PII"


@pytest.mark.parametrize("look_alike", ["\u212aate@acme.fr", "ｋate@acme.fr", "\u212bngstrom@acme.fr"])
def test_compatibility_look_alikes_are_refused_in_identifiers(look_alike: str) -> None:
    """U+212A KELVIN SIGN folds to 'k': accepted, it would make one person's rows another's."""
    d = doc()
    d["data"]["interaction"]["user_email"] = look_alike
    (problem,) = refused(json.dumps(d).encode())
    assert problem[0] == "data.interaction.user_email" and "NFKC" in problem[1]
