"""Kinesis Data Streams over AWS's JSON protocol (`X-Amz-Target: Kinesis_20131202.<Operation>`), answered by
the built-in `Streams`."""

from __future__ import annotations

import base64
import binascii
import datetime
from typing import Any

import msgspec
from aiohttp import web

from faas.api.json_protocol import JsonServiceError, json_operation
from faas.services import SERVICES
from faas.services.streams import Streams, shard_id
from faas.store.streams import ShardRow, StreamRow

SERVICE = "kinesis"
DEFAULT_PAGE = 100


def _streams(request: web.Request) -> Streams:
    return request.app[SERVICES].streams


def _name(streams: Streams, p: dict[str, Any]) -> str:
    return streams.resolve_name(p.get("StreamName"), p.get("StreamARN"))


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            try:
                return datetime.datetime.fromisoformat(value).timestamp()
            except ValueError:
                raise JsonServiceError("InvalidArgumentException", f"Invalid timestamp {value}.") from None
    return float(value)


def _token(parts: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(parts)).decode()


def _untoken(token: str) -> list[Any]:
    try:
        parts = msgspec.msgpack.decode(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, msgspec.DecodeError):
        parts = None
    if not isinstance(parts, list):
        raise JsonServiceError("InvalidArgumentException", f"Invalid NextToken {token}.")
    return parts


def _shards(stream: StreamRow, rows: list[ShardRow]) -> list[dict[str, Any]]:
    return [{
        "ShardId": shard_id(row.index),
        "HashKeyRange": {"StartingHashKey": str(row.starting_hash), "EndingHashKey": str(row.ending_hash)},
        "SequenceNumberRange": {"StartingSequenceNumber": Streams.sequence_number(stream, row.index, 0)},
    } for row in rows]


def _after_shard(value: str | None) -> int:
    """The index after which a listing starts, from an exclusive start shard id."""
    if not value:
        return -1
    digits = value.removeprefix("shardId-")
    return int(digits) if digits.isdigit() else -1


@json_operation(SERVICE, "CreateStream")
async def create_stream(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    mode = (p.get("StreamModeDetails") or {}).get("StreamMode")
    await _streams(request).create(p["StreamName"], p.get("ShardCount"), mode, p.get("MaxRecordSizeInKiB"))
    return {}


@json_operation(SERVICE, "DeleteStream")
async def delete_stream(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    streams = _streams(request)
    await streams.delete(_name(streams, p))
    return {}


@json_operation(SERVICE, "DescribeStream")
async def describe_stream(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    streams = _streams(request)
    stream = await streams.get(_name(streams, p))
    limit = p.get("Limit") or DEFAULT_PAGE
    start = _after_shard(p.get("ExclusiveStartShardId"))
    rows = [r for r in await streams.store.shards(stream.id) if r.index > start]
    return {"StreamDescription": {
        "StreamName": stream.name,
        "StreamARN": streams.arn(stream.name),
        "StreamStatus": streams.status(stream),
        "StreamModeDetails": {"StreamMode": stream.mode},
        "Shards": _shards(stream, rows[:limit]),
        "HasMoreShards": len(rows) > limit,
        "RetentionPeriodHours": stream.retention_hours,
        "StreamCreationTimestamp": stream.created_at,
        "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
        "EncryptionType": "NONE",
    }}


@json_operation(SERVICE, "DescribeStreamSummary")
async def describe_stream_summary(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    streams = _streams(request)
    stream = await streams.get(_name(streams, p))
    return {"StreamDescriptionSummary": {
        "StreamName": stream.name,
        "StreamARN": streams.arn(stream.name),
        "StreamStatus": streams.status(stream),
        "StreamModeDetails": {"StreamMode": stream.mode},
        "RetentionPeriodHours": stream.retention_hours,
        "StreamCreationTimestamp": stream.created_at,
        "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
        "EncryptionType": "NONE",
        "OpenShardCount": stream.shard_count,
        "ConsumerCount": 0,
        "MaxRecordSizeInKiB": stream.max_record_kib,
    }}


@json_operation(SERVICE, "ListStreams")
async def list_streams(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    streams = _streams(request)
    limit = p.get("Limit") or DEFAULT_PAGE
    after = p.get("ExclusiveStartStreamName")
    if p.get("NextToken"):
        parts = _untoken(p["NextToken"])
        if len(parts) != 1 or not isinstance(parts[0], str):
            raise JsonServiceError("InvalidArgumentException", f"Invalid NextToken {p['NextToken']}.")
        after = parts[0]
    rows = await streams.store.list(after, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    out: dict[str, Any] = {
        "StreamNames": [s.name for s in page],
        "HasMoreStreams": more,
        "StreamSummaries": [{
            "StreamName": s.name,
            "StreamARN": streams.arn(s.name),
            "StreamStatus": streams.status(s),
            "StreamModeDetails": {"StreamMode": s.mode},
            "StreamCreationTimestamp": s.created_at,
        } for s in page],
    }
    if more:
        out["NextToken"] = _token([page[-1].name])
    return out


@json_operation(SERVICE, "ListShards")
async def list_shards(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    streams = _streams(request)
    limit = p.get("MaxResults") or 1000
    if p.get("NextToken"):
        if p.get("StreamName") or p.get("StreamARN"):
            raise JsonServiceError("InvalidArgumentException",
                                   "NextToken and StreamName cannot be provided together.")
        if p.get("ExclusiveStartShardId"):
            raise JsonServiceError("InvalidArgumentException",
                                   "NextToken and ExclusiveStartShardId cannot be provided together.")
        parts = _untoken(p["NextToken"])
        if len(parts) != 2 or not isinstance(parts[0], str) or not isinstance(parts[1], int):
            raise JsonServiceError("InvalidArgumentException", f"Invalid NextToken {p['NextToken']}.")
        name, start = parts
    else:
        name, start = _name(streams, p), _after_shard(p.get("ExclusiveStartShardId"))
        start = max(start, _filter_start(p.get("ShardFilter")))
    stream = await streams.get(name)
    rows = [r for r in await streams.store.shards(stream.id) if r.index > start]
    out: dict[str, Any] = {"Shards": _shards(stream, rows[:limit])}
    if len(rows) > limit:
        out["NextToken"] = _token([name, rows[limit - 1].index])
    return out


def _filter_start(shard_filter: dict[str, Any] | None) -> int:
    """Every shard is open (streams are never resharded), so only AFTER_SHARD_ID narrows the listing."""
    if not shard_filter:
        return -1
    kind = shard_filter["Type"]
    if kind == "AFTER_SHARD_ID":
        if not shard_filter.get("ShardId"):
            raise JsonServiceError("InvalidArgumentException", "ShardId must be specified for ShardFilter type"
                                   " AFTER_SHARD_ID.")
        return _after_shard(shard_filter["ShardId"])
    if kind in ("AT_TIMESTAMP", "FROM_TIMESTAMP") and shard_filter.get("Timestamp") is None:
        raise JsonServiceError("InvalidArgumentException", f"Timestamp must be specified for ShardFilter type {kind}.")
    return -1


@json_operation(SERVICE, "IncreaseStreamRetentionPeriod")
async def increase_retention(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    streams = _streams(request)
    await streams.set_retention(_name(streams, p), p["RetentionPeriodHours"], increase=True)
    return {}


@json_operation(SERVICE, "DecreaseStreamRetentionPeriod")
async def decrease_retention(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    streams = _streams(request)
    await streams.set_retention(_name(streams, p), p["RetentionPeriodHours"], increase=False)
    return {}


def _check_size(stream_limit_kib: int, data: bytes, path: str) -> None:
    limit = stream_limit_kib * 1024
    if len(data) > limit:
        raise JsonServiceError("ValidationException", f"1 validation error detected: Value at '{path}' failed to"
                               f" satisfy constraint: Member must have length less than or equal to {limit}")


@json_operation(SERVICE, "PutRecord")
async def put_record(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    streams = _streams(request)
    name = _name(streams, p)
    stream = await streams.get_active(name, for_data=True)
    _check_size(stream.max_record_kib, p["Data"], "data")
    [result] = await streams.put(stream, [(p["PartitionKey"], p["Data"], p.get("ExplicitHashKey"))])
    return {"ShardId": result.shard_id, "SequenceNumber": result.sequence_number, "EncryptionType": "NONE"}


@json_operation(SERVICE, "PutRecords")
async def put_records(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    streams = _streams(request)
    name = _name(streams, p)
    stream = await streams.get_active(name, for_data=True)
    for n, entry in enumerate(p["Records"], 1):
        _check_size(stream.max_record_kib, entry["Data"], f"records.{n}.member.data")
    results = await streams.put(
        stream, [(e["PartitionKey"], e["Data"], e.get("ExplicitHashKey")) for e in p["Records"]]
    )
    return {
        "FailedRecordCount": 0,
        "Records": [{"SequenceNumber": r.sequence_number, "ShardId": r.shard_id} for r in results],
        "EncryptionType": "NONE",
    }


@json_operation(SERVICE, "GetShardIterator")
async def get_shard_iterator(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    streams = _streams(request)
    iterator = await streams.shard_iterator(
        _name(streams, p), p["ShardId"], p["ShardIteratorType"], p.get("StartingSequenceNumber"),
        _epoch(p.get("Timestamp")),
    )
    return {"ShardIterator": iterator}


@json_operation(SERVICE, "GetRecords")
async def get_records(request: web.Request, p: dict[str, Any]) -> dict[str, Any]:
    batch = await _streams(request).get_records(p["ShardIterator"], p.get("Limit"))
    return {
        "Records": [{
            "SequenceNumber": r.sequence_number,
            "ApproximateArrivalTimestamp": r.approximate_arrival,
            "Data": r.data,
            "PartitionKey": r.partition_key,
        } for r in batch.records],
        "NextShardIterator": batch.next_iterator,
        "MillisBehindLatest": batch.millis_behind,
    }
