"""Queue and table clients from the same settings the Functions host uses (factories only: the
clients are built once and kept by ``shared.wiring``, the composition root).

Two ways in, like the host: a connection string in ``AzureWebJobsStorage`` (local, Azurite), or
identity-based ``AzureWebJobsStorage__queueServiceUri`` / ``__accountName`` with a managed
identity (``__clientId`` for a user-assigned one) in Azure, where no account key exists.

Messages are base64-encoded because host.json says ``messageEncoding: base64``: a message that
does not match the host's encoding goes straight to poison with no clear error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import operator
import re
import typing
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from shared.config import ConfigError, Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_CONNECTION = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_KEY};"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


class EntityTable(Protocol):
    """The slice of ``azure.data.tables.TableClient`` the state classes use (so a test can stand
    in for it, and mypy sees every call)."""

    def get_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> Any: ...
    def create_entity(self, entity: dict[str, Any], **kwargs: Any) -> Any: ...
    def update_entity(self, entity: dict[str, Any], **kwargs: Any) -> Any: ...
    def upsert_entity(self, entity: dict[str, Any], **kwargs: Any) -> Any: ...
    def delete_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> None: ...
    def query_entities(self, query_filter: str, **kwargs: Any) -> Any: ...
    def list_entities(self, **kwargs: Any) -> Any: ...


class BatchTable(EntityTable, Protocol):
    """A table that also takes entity group transactions (``TableClient.submit_transaction``)."""

    def submit_transaction(self, operations: Iterable[Any], **kwargs: Any) -> Any: ...


MAX_OPERATIONS = 100  # entities in one entity group transaction
# A transaction costs the SDK ~6 ms of CPU before its first row (it starts two thread pools to
# prepare and parse the parts), then ~0.7 ms a row; one upsert costs ~2.3 ms. Below this many rows
# of a partition, single operations are cheaper (measured on Azurite, 2 cores).
TRANSACTION_FROM = 6
MAX_TRANSACTION_CHARS = 1_500_000  # well under the 4 MiB request limit even as UTF-16 (2 bytes a char)


def transactions(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``rows`` cut into groups one transaction can take: one partition, ≤ 100 rows, bounded size,
    in their order within each partition."""
    by_partition: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_partition.setdefault(str(r["PartitionKey"]), []).append(r)
    out: list[list[dict[str, Any]]] = []
    for group in by_partition.values():
        current: list[dict[str, Any]] = []
        size = 0
        for r in group:
            weight = sum(len(str(v)) for v in r.values())
            if current and (len(current) == MAX_OPERATIONS or size + weight > MAX_TRANSACTION_CHARS):
                out.append(current)
                current, size = [], 0
            current.append(r)
            size += weight
        if current:
            out.append(current)
    return out


def write_groups(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """:func:`transactions`, with the groups too small for a transaction to pay off (fewer than
    :data:`TRANSACTION_FROM` rows) cut into single rows: one request each, sent side by side."""
    return [g2 for g in transactions(rows) for g2 in ([g] if len(g) >= TRANSACTION_FROM else [[r] for r in g])]


class MessageQueue(Protocol):
    """The slice of ``azure.storage.queue.QueueClient`` the hunting shipper uses."""

    def receive_messages(self, **kwargs: Any) -> Any: ...
    def update_message(self, message: Any, **kwargs: Any) -> Any: ...
    def delete_message(self, message: Any, **kwargs: Any) -> None: ...


class QueueUnavailable(Exception):
    """The queue cannot be written: the webhook must answer 503 so that the sender retries."""


def connection_string(settings: Settings) -> str | None:
    """The connection string to use, or None for identity-based access.

    A connection string without a usable credential (an empty ``AccountKey`` and no SAS, as the
    azurerm provider writes beside identity settings) never wins over the identity-based
    ``AzureWebJobsStorage__*`` settings: it would fail every call.
    """
    conn = (settings.storage_connection or "").strip()
    if conn.rstrip(";").lower() == "usedevelopmentstorage=true":
        return AZURITE_CONNECTION
    if not conn:
        return None
    parts = {k.strip().lower(): v for k, _, v in (p.partition("=") for p in conn.split(";")) if k.strip()}
    usable = parts.get("accountkey") or parts.get("sharedaccesssignature")
    identity = (
        settings.storage_account_name
        or settings.storage_queue_service_uri
        or settings.storage_table_service_uri
        or settings.storage_blob_service_uri
    )
    if not usable and identity:
        return None
    return conn


def _service_uri(settings: Settings, service: str, explicit: str | None) -> str:
    """The identity-based endpoint of one storage service, as the Functions host derives it.

    The infra sets ``__{queue,table,blob}ServiceUri`` from the cloud's storage suffix (Azure
    Government, China); ``__accountName`` alone can only mean the public cloud, as for the host."""
    if explicit:
        return explicit.rstrip("/")
    if settings.storage_account_name:
        return f"https://{settings.storage_account_name}.{service}.core.windows.net"
    raise ConfigError(
        "AzureWebJobsStorage",
        f"set a connection string (local) or AzureWebJobsStorage__{service}ServiceUri / __accountName "
        "(managed identity)",
    )


def queue_service_uri(settings: Settings) -> str:
    return _service_uri(settings, "queue", settings.storage_queue_service_uri)


def table_service_uri(settings: Settings) -> str:
    return _service_uri(settings, "table", settings.storage_table_service_uri)


def identity_credential(settings: Settings) -> TokenCredential:
    """The storage identity, as the host uses it: the user-assigned identity named by
    ``AzureWebJobsStorage__clientId``, else whatever DefaultAzureCredential finds (az login locally)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if settings.storage_client_id:
        return ManagedIdentityCredential(client_id=settings.storage_client_id)
    return DefaultAzureCredential()


POOL_SIZE = 32  # connections kept per client: above the 16 requests the app keeps in flight at once


def _transport_options() -> dict[str, Any]:
    """A transport of our own for each client: requests re-reads every proxy variable of the
    environment on every request (about a third of the client's CPU per queue message here), so
    they are read once, when the client is built; and urllib3 keeps only 10 connections per host by
    default, so with 16 requests in flight it discarded and reopened connections all the time."""
    import urllib.request

    import requests
    from azure.core.pipeline.transport import RequestsTransport

    session = requests.Session()
    session.trust_env = False
    session.proxies.update({k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")})
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return {"transport": RequestsTransport(session=session, session_owner=True, use_env_settings=False)}


def build_queue_client(
    settings: Settings, name: str, credential: TokenCredential | None, *, raw: bool = False
) -> QueueClient:
    """A QueueClient with base64 text encoding, matching host.json (``credential`` for identity
    access); ``raw``: no encoding at all, to read what may not be valid base64 (poison messages)."""
    from azure.storage.queue import LinearRetry, QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

    policies: dict[str, Any] = (
        {}
        if raw
        else {
            "message_encode_policy": TextBase64EncodePolicy(),
            "message_decode_policy": TextBase64DecodePolicy(),
        }
    )
    policies |= {
        # The SDK default waits 15 s and more between tries; the webhook must answer
        # 503 within seconds so that Noxys retries instead of timing out.
        "retry_policy": LinearRetry(backoff=1, retry_total=2, random_jitter_range=1),
        "connection_timeout": 5,
        "read_timeout": 10,
        **_transport_options(),
    }
    conn = connection_string(settings)
    if conn:
        return QueueClient.from_connection_string(conn, name, **policies)
    return QueueClient(queue_service_uri(settings), name, credential=credential, **policies)


def build_table_client(settings: Settings, name: str, credential: TokenCredential | None) -> TableClient:
    """A TableClient; the table is created if it does not exist yet."""
    from azure.core.exceptions import ResourceExistsError
    from azure.data.tables import TableClient

    conn = connection_string(settings)
    if conn:
        client = TableClient.from_connection_string(conn, table_name=name, **_transport_options())
    else:
        client = TableClient(
            table_service_uri(settings), table_name=name, credential=credential, **_transport_options()
        )
    with contextlib.suppress(ResourceExistsError):
        client.create_table()
    return client


def send(
    client: QueueClient, text: str, *, visibility_timeout: int | None = None, time_to_live: int | None = None
) -> str:
    """Durably add one message; create the queue once if it is missing. Raises QueueUnavailable.

    ``time_to_live=-1`` keeps the message until it is deleted (the default is 7 days)."""
    from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

    try:
        try:
            sent = client.send_message(text, visibility_timeout=visibility_timeout, time_to_live=time_to_live)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
            sent = client.send_message(text, visibility_timeout=visibility_timeout, time_to_live=time_to_live)
    except AzureError as exc:
        raise QueueUnavailable(f"queue {client.queue_name}: {exc.__class__.__name__}") from None
    return str(sent.id)


_KEY_UNSAFE = re.compile(r"[/\\#?%\x00-\x1f\x7f-\x9f]")
KEY_READABLE_MAX = 200  # UTF-16 code units; Table keys allow 1 KiB (512 units)
DIGEST_MARK = "%H"  # never produced by the escaping: an escape is '%' + two hex digits


def table_key(text: str) -> str:
    """A collision-free PartitionKey/RowKey for arbitrary text (sender input included).

    Short text stays readable: '/', '\\', '#', '?', '%' and control characters are escaped as
    ``%XX`` (an injective escaping, so two texts never share a key). Longer text keeps a readable
    prefix followed by ``%H`` and the SHA-256 of the whole text: ``%H`` never occurs in an escaped
    text, so a digest key cannot equal a readable key, and cutting can no longer make two ids
    that share a long prefix land on one row (the entity keeps the original id as a property).
    """
    escaped = _KEY_UNSAFE.sub(lambda m: f"%{ord(m.group(0)):02X}", text)
    if len(escaped.encode("utf-16-le")) <= KEY_READABLE_MAX * 2:
        return escaped
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    prefix = "".join(ch for ch in escaped[:64] if ord(ch) < 0x10000)
    return f"{prefix}{DIGEST_MARK}{digest}"


def is_storage_error(exc: BaseException) -> bool:
    """An Azure SDK error (storage down or refusing): the host's retry is the right answer."""
    from azure.core.exceptions import AzureError

    return isinstance(exc, AzureError)


def delete_if_there(table: EntityTable, pk: str, rk: str) -> bool:
    """Delete one row; True when it was there. The SDK's ``delete_entity`` returns quietly on a
    404, so the answer's status is read from the response hook the pipeline calls for every answer."""
    statuses: list[int] = []
    table.delete_entity(pk, rk, raw_response_hook=lambda r: statuses.append(r.http_response.status_code))
    return not statuses or statuses[-1] != 404


# ------------------------------------------------------------------ records
R = TypeVar("R")


def _reader(hint: Any) -> Callable[[Any], Any]:
    """How a stored property becomes the field's type (``X | None`` reads as ``X``)."""
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = kinds[0]
    if kind is bool:
        return bool
    if kind in (int, float):
        return kind  # type: ignore[no-any-return]
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return lambda raw: kind(str(raw))
    return str


@dataclasses.dataclass(frozen=True)
class _Shape:
    """How one dataclass maps to properties: a reader per stored field, or the shape of a part (a
    dataclass-typed field, flattened into the same row); ``nullable``: required ``X | None`` fields."""

    cls: Any
    fields: dict[str, Callable[[Any], Any] | _Shape]
    nullable: frozenset[str]

    @staticmethod
    def of(cls: Any, skip: tuple[str, ...] = ()) -> _Shape:
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.name not in skip]
        readers: dict[str, Callable[[Any], Any] | _Shape] = {}
        for f in fields:
            args = typing.get_args(hints[f.name])
            if type(None) in args and any(dataclasses.is_dataclass(a) for a in args):
                raise TypeError(f"{cls.__name__}.{f.name}: a part is flattened only when it is not optional")
            is_part = dataclasses.is_dataclass(hints[f.name])
            readers[f.name] = _Shape.of(hints[f.name]) if is_part else _reader(hints[f.name])
        required = [f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        nullable = frozenset(f.name for f in required if type(None) in typing.get_args(hints[f.name]))
        return _Shape(cls, readers, nullable)

    def paths(self, prefix: str = "") -> list[tuple[str, str]]:
        """Every stored property, the parts' included, in row order: (its name, its dotted path)."""
        return [
            p
            for n, r in self.fields.items()
            for p in (r.paths(f"{prefix}{n}.") if isinstance(r, _Shape) else [(n, f"{prefix}{n}")])
        ]


class Codec(Generic[R]):
    """One typed mapping between a dataclass and its Table row, for every table: field names are
    the property names (so rows already written keep reading), a ``None`` field is not stored, a
    property missing on an older row (or empty, for an enum) takes the field's default, each value
    is read back as the field's type, and an ``etag`` field is filled from the row's metadata.
    ``keys`` gives a record's PartitionKey and RowKey; ``limits`` cuts long text properties;
    ``in_key`` names fields kept only in a key (the caller gives them back to :meth:`record`).

    A field whose type is a dataclass (a *part*, grouping fields that belong together) is
    flattened: its fields are properties of the same row, by their own names (no prefix), so
    grouping fields changes the record and never the row; a part missing from an older row reads
    with its fields' defaults. Property names must be unique across the parts."""

    def __init__(
        self,
        cls: type[R],
        keys: Callable[[R], tuple[str, str]],
        *,
        limits: dict[str, int] | None = None,
        in_key: tuple[str, ...] = (),
    ) -> None:
        self._cls, self._keys, self._limits = cls, keys, limits or {}
        self._shape = _Shape.of(cls, skip=("etag", *in_key))
        paths = self._shape.paths()
        names = [name for name, _ in paths]
        if len(set(names)) != len(names):
            raise TypeError(f"{cls.__name__}: a property name is used twice: {sorted(names)}")
        self._getters = [(name, operator.attrgetter(path)) for name, path in paths]
        self._etag = "etag" in {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    def entity(self, record: R) -> dict[str, Any]:
        pk, rk = self._keys(record)
        row: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk}
        for name, get in self._getters:
            value = get(record)
            if value is None:
                continue
            value = value.value if isinstance(value, enum.Enum) else value
            row[name] = value[: self._limits[name]] if name in self._limits else value
        return row

    def record(self, entity: Any, **given: Any) -> R:
        """The row as a record; ``given`` fields win over the row's (a key it was looked up by)."""
        values = self._values(self._shape, entity, given)
        if self._etag:
            metadata = getattr(entity, "metadata", None) or {}
            values["etag"] = metadata.get("etag")
        return self._cls(**values, **given)

    def _values(self, shape: _Shape, entity: Any, given: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, read in shape.fields.items():
            if isinstance(read, _Shape):
                if name not in given:
                    values[name] = read.cls(**self._values(read, entity, {}))
                continue
            raw = entity.get(name)
            if name in given or raw is None or (raw == "" and read not in (str, bool)):
                if name in shape.nullable and name not in given:
                    values[name] = None  # Table Storage keeps no null: an absent property is one
                continue
            values[name] = read(raw)
        return values


# ------------------------------------------------------------------ conditional writes
class Contended(Exception):
    """Every try of :func:`update_if_match` lost to another writer (the caller decides: back off,
    refuse, or let it go)."""


@dataclasses.dataclass(frozen=True)
class Stored:
    """A row as written, with the ETag the service gave it."""

    entity: dict[str, Any]
    etag: str


def write_if_match(table: EntityTable, entity: dict[str, Any], etag: str | None) -> str | None:
    """The one conditional write: create the row when it was missing (``etag`` None), else replace
    it only if unchanged since it was read. Returns the new ETag, or None when another writer won
    (the row was created, changed or deleted meanwhile): the caller reads again or lets it stand."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
    from azure.data.tables import UpdateMode

    try:
        if etag is None:
            meta = table.create_entity(entity)
        else:
            meta = table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        return None
    return str((meta or {}).get("etag") or "")


def read_row(table: EntityTable, pk: str, rk: str) -> tuple[dict[str, Any] | None, str | None]:
    """The row's properties and ETag, or (None, None) when there is no such row."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        entity = table.get_entity(pk, rk)
    except ResourceNotFoundError:
        return None, None
    return dict(entity), entity.metadata.get("etag")


def update_if_match(
    table: EntityTable,
    pk: str,
    rk: str,
    mutate: Callable[[dict[str, Any] | None], dict[str, Any] | None],
    tries: int,
    *,
    backoff: Callable[[int], None] | None = None,
    known: Stored | None = None,
) -> Stored | None:
    """Read-modify-write of one row, safe between instances: ``mutate`` gets the row's properties
    (None when it does not exist) and returns what to store (None: nothing to write, stop); the
    write is conditional on the ETag read, and a lost race reads and decides again, up to
    ``tries`` times (``backoff(attempt)`` before each retry), then raises :class:`Contended`.
    ``mutate`` may run several times: keep what it decides in the closure of its last call.
    ``known``: the row as this instance last stored it; the first try decides on it without a read
    (a stale copy is refused by its ETag, and the next try reads). Returns what was stored (keep it
    for ``known``), or None when ``mutate`` stopped."""
    for attempt in range(tries):
        if attempt and backoff is not None:
            backoff(attempt)
        current: dict[str, Any] | None
        etag: str | None
        if attempt == 0 and known is not None:
            current, etag = dict(known.entity), known.etag
        else:
            current, etag = read_row(table, pk, rk)
        wanted = mutate(current)
        if wanted is None and attempt == 0 and known is not None:
            continue  # nothing to write on a copy that may be stale: decide again on the row itself
        if wanted is None:
            return None
        entity = {**wanted, "PartitionKey": pk, "RowKey": rk}
        written = write_if_match(table, entity, etag)
        if written is not None:
            return Stored(entity, written)
    raise Contended(f"{pk}/{rk}: {tries} tries lost to other writers")
