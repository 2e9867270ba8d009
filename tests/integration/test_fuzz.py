"""Property: no correctly signed body — arbitrary JSON, arbitrary bytes, or a sample with any field
replaced by anything — gets a 5xx or raises. ``FUZZ_EXAMPLES`` sets the budget (CI: 150 each)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
