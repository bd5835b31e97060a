"""Protocol buffer rows for the BigQuery Storage Write API, built from :mod:`sync.schema`.

The Write API takes rows as serialised protobuf messages plus the message's descriptor. The
descriptor is made here from the same (name, type, mode, description) field lists the tables
are created from, so a column added to the schema is sent by both targets without a ``.proto``
file to keep in step. Encodings follow the Write API's type rules: TIMESTAMP as int64
microseconds since the epoch, DATE as int32 days since the epoch, GEOGRAPHY (WKT) and JSON as
strings, a REPEATED RECORD as a repeated nested message. Proto2 labels carry the modes, so a
NULL stays unset rather than becoming 0 or "".

Imports protobuf only (a dependency of the google-cloud libraries), never at module level of
anything the agent imports without the ``[cloud]`` extra.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from sync.schema import RECORD_FIELDS

Field = tuple[str, str, str, str]
_T = descriptor_pb2.FieldDescriptorProto

#: BigQuery type -> proto field type (see the module docstring for the encodings)
_TYPES: dict[str, int] = {
    "STRING": _T.TYPE_STRING,
    "GEOGRAPHY": _T.TYPE_STRING,
    "JSON": _T.TYPE_STRING,
    "INT64": _T.TYPE_INT64,
    "FLOAT64": _T.TYPE_DOUBLE,
    "BOOL": _T.TYPE_BOOL,
    "TIMESTAMP": _T.TYPE_INT64,
    "DATE": _T.TYPE_INT32,
    "RECORD": _T.TYPE_MESSAGE,
}
_LABELS: dict[str, int] = {
    "REQUIRED": _T.LABEL_REQUIRED,
    "NULLABLE": _T.LABEL_OPTIONAL,
    "REPEATED": _T.LABEL_REPEATED,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def descriptor(name: str, fields: list[Field]) -> descriptor_pb2.DescriptorProto:
    """A self-contained DescriptorProto of one table row (RECORD fields as nested types).

    Self-contained because the Write API resolves no imports: every nested message lives
    inside the row message itself."""
    msg = descriptor_pb2.DescriptorProto(name=name)
    for number, (fname, ftype, mode, _) in enumerate(fields, start=1):
        if ftype not in _TYPES:
            raise ValueError(f"no Write API encoding for {fname} ({ftype})")
        f = msg.field.add(name=fname, number=number, type=_TYPES[ftype], label=_LABELS[mode])
        if ftype == "RECORD":
            nested = descriptor(_nested_name(fname), RECORD_FIELDS[fname])
            msg.nested_type.add().CopyFrom(nested)
            f.type_name = nested.name  # relative: resolved inside the row message
    return msg


def _nested_name(field: str) -> str:
    return "".join(part.title() for part in field.split("_"))


def message_class(name: str, fields: list[Field]) -> type:
    """A protobuf message class for rows of ``fields`` (one private pool per call)."""
    # a pool of its own: the default pool would refuse a second, changed FrameRow (new column)
    pool = descriptor_pool.DescriptorPool()
    fd = descriptor_pb2.FileDescriptorProto(name=f"{name}.proto", package="skysift", syntax="proto2")
    fd.message_type.add().CopyFrom(descriptor(name, fields))
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{fd.package}.{name}"))


def _micros(ts: str) -> int:
    t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)  # the outbox stores UTC
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _days(d: str) -> int:
    return (date.fromisoformat(d[:10]) - _EPOCH.date()).days


def _encode(ftype: str, value: Any) -> Any:
    if ftype == "TIMESTAMP":
        return _micros(value)
    if ftype == "DATE":
        return _days(value)
    if ftype == "FLOAT64":
        return float(value)
    return value


def fill(msg: Any, row: dict[str, Any], fields: list[Field]) -> Any:
    """Set ``msg``'s fields from one JSON-ready row (as :func:`sync.schema.frame_row` makes
    it); None leaves a field unset (NULL). Returns ``msg``."""
    for fname, ftype, mode, _ in fields:
        value = row.get(fname)
        if value is None:
            continue
        if ftype == "RECORD":
            for item in value:
                fill(getattr(msg, fname).add(), item, RECORD_FIELDS[fname])
        elif mode == "REPEATED":
            getattr(msg, fname).extend(_encode(ftype, v) for v in value)
        else:
            setattr(msg, fname, _encode(ftype, value))
    return msg


def serialise(cls: type, rows: list[dict[str, Any]], fields: list[Field]) -> list[bytes]:
    """The serialised messages of ``rows``, in order."""
    return [fill(cls(), r, fields).SerializeToString() for r in rows]
