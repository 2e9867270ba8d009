"""Property: no correctly signed body — arbitrary JSON, arbitrary bytes, or a sample with any field
replaced by anything — gets a 5xx or raises; any URL is refused by name or kept as scheme and host;
any identifier is refused by name or kept visible and NFKC-stable; any name stays text in every
export. ``FUZZ_EXAMPLES`` sets the budget (CI: 150 each)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.events import Envelope, InvalidEvents, parse_events
from shared.functions.ingest import handle
from tests.support import SAMPLES, TEST_SECRET, Env, signed_headers

pytestmark = pytest.mark.integration

BUDGET = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=not os.environ.get("FUZZ_RANDOM"),
)
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=40)  # surrogates and controls too
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | ANY_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT, inner, max_size=5),
    max_leaves=30,
)
DOCS = [json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.json"))]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    doc = json.loads(json.dumps(draw(st.sampled_from(DOCS))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(doc)))
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = draw(JSON)
    return json.dumps(doc).encode()  # ensure_ascii: lone surrogates travel as \ud800 escapes


def raw_signed(body: bytes) -> dict[str, str]:
    """Standard Webhooks over the raw bytes (the reference library only signs text)."""
    stamp = str(int(time.time()))
    key = base64.b64decode(TEST_SECRET.removeprefix("whsec_"))
    sig = base64.b64encode(hmac.new(key, f"msg_1.{stamp}.".encode() + body, hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json",
        "webhook-id": "msg_1",
        "webhook-timestamp": stamp,
        "webhook-signature": f"v1,{sig}",
    }


def check(body: bytes) -> None:
    headers = signed_headers(body) if _utf8(body) else raw_signed(body)
    resp = handle(body, headers)
    assert resp.status_code < 500, resp.get_body()[:300]
    answer = json.loads(resp.get_body())
    if resp.status_code == 400:
        assert answer["errors"] and all(e["field"] for e in answer["errors"])


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@BUDGET
@given(body=mutated_samples())
def test_any_mutation_of_a_sample_gets_a_clear_answer(env: Env, body: bytes) -> None:
    check(body)


@BUDGET
@given(doc=JSON)
def test_any_json_gets_a_clear_answer(env: Env, doc: Any) -> None:
    check(json.dumps(doc).encode())


@BUDGET
@given(body=st.binary(max_size=300))
def test_any_bytes_get_a_clear_answer(env: Env, body: bytes) -> None:
    check(body)


# ---------------------------------------------------------------- URLs, identifiers, exports
SAMPLE = json.loads((SAMPLES / "policy_violated.json").read_text())
HOSTILE_CHARS = st.sampled_from(["\u202e", "\u200b", "\u212a", "\uff4b", "\u00a0", "_", "%", "\\", " ", "@", ":", "["])
HOSTS = st.lists(st.text("abcxyz019-" + "é", min_size=1, max_size=12), min_size=1, max_size=4).map(".".join)
URLS = st.tuples(
    st.sampled_from(["https://", "http://", "", "HTTPS://", "https://user:pw@"]),
    HOSTS | st.text(max_size=30),
    st.sampled_from(["", ":8443", ":x"]),
    st.text(max_size=30),
).map(lambda p: f"{p[0]}{p[1]}{p[2]}/{p[3]}?q=fuzzprompt#fuzzfrag")
IDENTIFIERS = st.builds(
    lambda a, c, b: a + c + b, st.text("alice@acme.fr", max_size=8), HOSTILE_CHARS, st.text(max_size=8)
)


MARKUP = ["<img src=x onerror=alert(1)>", "[x](javascript:alert(1))", "<script>", "=HYPERLINK(1)", "+", "-", "@", "\t"]
NAMES = st.lists(
    st.sampled_from(MARKUP) | ANY_TEXT.filter(lambda t: not re.search(r"[\ud800-\udfff]", t)), max_size=4
).map("".join)


def _with(field: str, value: str) -> bytes:
    doc = json.loads(json.dumps(SAMPLE))
    it = doc["data"]["interaction"]
    if field == "url":
        it["content_metadata"]["url"] = value
    elif field == "hostname":
        it["device"]["hostname"] = value
    else:
        it[field] = value
    return json.dumps(doc).encode()


def _parsed(body: bytes) -> tuple[Envelope | None, list[str]]:
    """The event, or the fields its refusal names."""
    try:
        (event,) = parse_events(body)
    except InvalidEvents as exc:
        return None, [e.field for e in exc.errors]
    return event, []


@BUDGET
@given(url=URLS)
def test_any_url_is_refused_by_name_or_kept_as_scheme_and_host(env: Env, url: str) -> None:
    body = _with("url", url)
    check(body)
    event, refused = _parsed(body)
    if event is None:
        assert refused == ["data.interaction.content_metadata.url"]
        return
    assert event.data.interaction and event.data.interaction.content_metadata
    kept = str(event.data.interaction.content_metadata.url)
    assert re.fullmatch(r"([a-z][a-z0-9+.-]*://)?[a-z0-9.-]+", kept), kept
    assert "fuzz" not in event.model_dump_json()


@BUDGET
@given(field=st.sampled_from(["user_email", "user_id", "hostname"]), value=IDENTIFIERS)
def test_an_identifier_is_refused_by_name_or_is_visible_and_stable(env: Env, field: str, value: str) -> None:
    from shared.events import INVISIBLE

    body = _with(field, value)
    check(body)
    event, refused = _parsed(body)
    if event is None:
        assert refused and all(f.endswith(field) for f in refused)
        return
    it = event.data.interaction
    assert it is not None
    kept = str(it.device.hostname if field == "hostname" and it.device else getattr(it, field))
    assert not INVISIBLE.search(kept) and unicodedata.normalize("NFKC", kept) == kept


@BUDGET
@given(names=st.lists(NAMES, min_size=2, max_size=2))
def test_any_name_stays_text_in_every_export(names: list[str]) -> None:
    """Whatever a name holds, the Markdown report renders it as text (no tag, no link) and no
    CSV cell of the audit export starts a formula."""
    import csv
    import io

    from markdown_it import MarkdownIt

    from ops import report
    from shared.audit import FIELDS, export
    from shared.delivery.ledger import Entry, KeptFacts, LedgerState

    entries = [
        Entry(f"e{i}", LedgerState.NO_DEVICE, facts=KeptFacts(user=n, platform=n, device_name=n))
        for i, n in enumerate(names)
    ]
    now = datetime.now(UTC)
    rendered = (
        MarkdownIt("commonmark")
        .enable("table")
        .render(report.render_markdown(report.build(entries, {}, since=now - timedelta(days=1), until=now, now=now)))
    )
    assert "<a " not in rendered and "<img" not in rendered and "<script" not in rendered.lower()
    rows = [dict.fromkeys(FIELDS, n) for n in names]
    for row in csv.DictReader(io.StringIO("\n".join(export(iter(rows), "csv")), newline="")):
        assert not any(str(v).startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values())
