"""Built-in Kinesis data streams, through boto3's `kinesis` client against real servers; the interface event
source mappings poll (`Streams.describe/read/latest_sequence/exists`) and the retention pass, in-process."""

from __future__ import annotations

import concurrent.futures
import hashlib
import signal
import time

import pytest
from botocore.exceptions import ClientError

from conftest import Server, unique, wait_for
from faas.arn import Arns
from faas.config import StreamsConfig
from faas.services.streams import Streams
from faas.store.db import Database

HASH_SPACE = 1 << 128
ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def kin(server: Server):
    client = server.client("kinesis")
    yield client
    client.close()


def new_stream(kin, shards: int = 1, **kwargs) -> str:
    name = unique("stream")
    kin.create_stream(StreamName=name, ShardCount=shards, **kwargs)
    kin.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return name


def error_of(exc: pytest.ExceptionInfo) -> tuple[str, str]:
    err = exc.value.response["Error"]
    return err["Code"], err["Message"]


def md5_int(key: str) -> int:
    return int(hashlib.md5(key.encode()).hexdigest(), 16)


def read_all(kin, name: str, shard: str = "shardId-000000000000", kind: str = "TRIM_HORIZON", **kwargs) -> list:
    it = kin.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType=kind, **kwargs)["ShardIterator"]
    out = []
    while True:
        resp = kin.get_records(ShardIterator=it)
        out += resp["Records"]
        if not resp["Records"]:
            return out
        it = resp["NextShardIterator"]


# -- control plane -----------------------------------------------------------------------------------------

def test_create_describe_list_delete(kin):
    name = new_stream(kin, shards=3)
    arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}"
    desc = kin.describe_stream(StreamName=name)["StreamDescription"]
    assert (desc["StreamName"], desc["StreamARN"], desc["StreamStatus"]) == (name, arn, "ACTIVE")
    assert desc["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert desc["RetentionPeriodHours"] == 24 and desc["HasMoreShards"] is False
    assert abs(desc["StreamCreationTimestamp"].timestamp() - time.time()) < 60
    shards = desc["Shards"]
    assert [s["ShardId"] for s in shards] == ["shardId-000000000000", "shardId-000000000001", "shardId-000000000002"]
    ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])) for s in shards]
    assert ranges[0][0] == 0 and ranges[-1][1] == HASH_SPACE - 1
    assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(2))
    assert ranges[1][0] == HASH_SPACE // 3
    assert all(s["SequenceNumberRange"]["StartingSequenceNumber"].isdigit() for s in shards)

    summary = kin.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]
    assert (summary["StreamName"], summary["OpenShardCount"], summary["StreamStatus"]) == (name, 3, "ACTIVE")
    assert summary["RetentionPeriodHours"] == 24 and summary["EncryptionType"] == "NONE"

    listed = kin.list_streams(ExclusiveStartStreamName=name[:-1])
    assert name in listed["StreamNames"]
    summaries = {s["StreamName"]: s for s in listed["StreamSummaries"]}
    assert summaries[name]["StreamARN"] == arn and summaries[name]["StreamStatus"] == "ACTIVE"

    with pytest.raises(kin.exceptions.ResourceInUseException) as exc:
        kin.create_stream(StreamName=name, ShardCount=1)
    assert error_of(exc) == ("ResourceInUseException", f"Stream {name} under account {ACCOUNT} already exists.")

    kin.delete_stream(StreamARN=arn)
    kin.get_waiter("stream_not_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    with pytest.raises(kin.exceptions.ResourceNotFoundException) as exc:
        kin.describe_stream(StreamName=name)
    assert error_of(exc) == ("ResourceNotFoundException", f"Stream {name} under account {ACCOUNT} not found.")
    with pytest.raises(kin.exceptions.ResourceNotFoundException):
        kin.delete_stream(StreamName=name)
    assert name not in kin.list_streams(ExclusiveStartStreamName=name[:-1])["StreamNames"]


def test_on_demand_mode_and_create_errors(kin):
    name = unique("stream")
    kin.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    desc = kin.describe_stream(StreamName=name)["StreamDescription"]
    assert desc["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert len(desc["Shards"]) == 4
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.create_stream(StreamName=unique("stream"), StreamModeDetails={"StreamMode": "PROVISIONED"})
    with pytest.raises(kin.exceptions.LimitExceededException):
        kin.create_stream(StreamName=unique("stream"), ShardCount=100000)
    with pytest.raises(ClientError) as exc:
        kin.create_stream(StreamName="bad name!", ShardCount=1)
    assert error_of(exc)[0] == "ValidationException"


def test_pagination(kin):
    names = sorted(new_stream(kin) for _ in range(3))
    seen, token = [], None
    start = {"ExclusiveStartStreamName": names[0][:-1]}
    while True:
        resp = kin.list_streams(Limit=1, **({"NextToken": token} if token else start))
        seen += resp["StreamNames"]
        assert len(resp["StreamNames"]) <= 1
        if not resp["HasMoreStreams"]:
            assert "NextToken" not in resp
            break
        token = resp["NextToken"]
    assert seen == sorted(seen) and set(names) <= set(seen)

    name = new_stream(kin, shards=5)
    ids, token = [], None
    while True:
        resp = kin.list_shards(MaxResults=2, **({"NextToken": token} if token else {"StreamName": name}))
        ids += [s["ShardId"] for s in resp["Shards"]]
        token = resp.get("NextToken")
        if not token:
            break
    assert ids == [f"shardId-{i:012d}" for i in range(5)]
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.list_shards(StreamName=name, NextToken=kin.list_shards(StreamName=name, MaxResults=1)["NextToken"])
    after = kin.list_shards(StreamName=name, ShardFilter={"Type": "AFTER_SHARD_ID", "ShardId": "shardId-000000000002"})
    assert [s["ShardId"] for s in after["Shards"]] == ["shardId-000000000003", "shardId-000000000004"]
    assert len(kin.list_shards(StreamName=name, ExclusiveStartShardId="shardId-000000000003")["Shards"]) == 1

    page = kin.describe_stream(StreamName=name, Limit=2)["StreamDescription"]
    assert len(page["Shards"]) == 2 and page["HasMoreShards"] is True
    rest = kin.describe_stream(StreamName=name, ExclusiveStartShardId=page["Shards"][-1]["ShardId"])
    assert [s["ShardId"] for s in rest["StreamDescription"]["Shards"]] == [f"shardId-{i:012d}" for i in (2, 3, 4)]
    assert rest["StreamDescription"]["HasMoreShards"] is False


def test_retention_period(kin):
    name = new_stream(kin)

    def retention() -> int:
        return kin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["RetentionPeriodHours"]

    kin.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=48)
    assert retention() == 48
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=36)
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=8761)
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=72)
    kin.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=24)
    assert retention() == 24
    with pytest.raises(kin.exceptions.InvalidArgumentException) as exc:
        kin.decrease_stream_retention_period(StreamName=name, RetentionPeriodHours=12)
    assert "Minimum allowed retention period is 24 hours" in error_of(exc)[1]
    with pytest.raises(kin.exceptions.ResourceNotFoundException):
        kin.increase_stream_retention_period(StreamName=unique("missing"), RetentionPeriodHours=48)


def test_naming_errors(kin):
    name = new_stream(kin)
    missing = unique("missing")
    with pytest.raises(kin.exceptions.ResourceNotFoundException) as exc:
        kin.put_record(StreamName=missing, Data=b"x", PartitionKey="k")
    assert error_of(exc) == ("ResourceNotFoundException", f"Stream {missing} under account {ACCOUNT} not found.")
    with pytest.raises(kin.exceptions.ResourceNotFoundException):
        kin.describe_stream(StreamARN=f"arn:aws:kinesis:us-east-1:111111111111:stream/{name}")
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.describe_stream(StreamName=name, StreamARN=f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{missing}")
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.describe_stream()
    with pytest.raises(ClientError) as exc:
        kin.put_record(StreamName=name, Data=b"x" * (1024 * 1024 + 1), PartitionKey="k")
    assert error_of(exc)[0] == "ValidationException"
    with pytest.raises(kin.exceptions.ResourceNotFoundException):
        kin.get_shard_iterator(StreamName=name, ShardId="shardId-000000000007", ShardIteratorType="LATEST")


# -- data plane --------------------------------------------------------------------------------------------

def test_partition_keys_route_by_md5_and_explicit_hash_key(kin):
    name = new_stream(kin, shards=4)
    shards = kin.list_shards(StreamName=name)["Shards"]
    ranges = {s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
              for s in shards}

    def owner(value: int) -> str:
        [found] = [sid for sid, (lo, hi) in ranges.items() if lo <= value <= hi]
        return found

    keys = [f"key-{i}" for i in range(40)]
    for key in keys[:20]:
        assert kin.put_record(StreamName=name, Data=key.encode(), PartitionKey=key)["ShardId"] == owner(md5_int(key))
    batch = kin.put_records(StreamName=name, Records=[{"Data": k.encode(), "PartitionKey": k} for k in keys[20:]])
    assert batch["FailedRecordCount"] == 0
    assert [r["ShardId"] for r in batch["Records"]] == [owner(md5_int(k)) for k in keys[20:]]
    assert len({owner(md5_int(k)) for k in keys}) == 4  # the keys do spread over every shard

    for sid, (lo, hi) in ranges.items():
        for explicit in (lo, hi):
            resp = kin.put_record(StreamName=name, Data=b"e", PartitionKey="same", ExplicitHashKey=str(explicit))
            assert resp["ShardId"] == sid
    batch = kin.put_records(StreamName=name, Records=[
        {"Data": b"a", "PartitionKey": "same", "ExplicitHashKey": "0"},
        {"Data": b"b", "PartitionKey": "same", "ExplicitHashKey": str(HASH_SPACE - 1)},
    ])
    assert [r["ShardId"] for r in batch["Records"]] == ["shardId-000000000000", "shardId-000000000003"]
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.put_record(StreamName=name, Data=b"x", PartitionKey="k", ExplicitHashKey=str(HASH_SPACE))

    by_shard = {sid: {r["PartitionKey"] for r in read_all(kin, name, sid)} for sid in ranges}
    for key in keys:
        assert key in by_shard[owner(md5_int(key))]


def test_sequence_numbers_increase_per_shard(kin):
    name = new_stream(kin, shards=2)
    put: dict[str, list[int]] = {}
    for i in range(10):
        r = kin.put_record(StreamName=name, Data=b"%d" % i, PartitionKey=f"p{i}")
        assert len(r["SequenceNumber"]) == 56
        put.setdefault(r["ShardId"], []).append(int(r["SequenceNumber"]))
    batch = kin.put_records(StreamName=name, Records=[{"Data": b"b", "PartitionKey": f"b{i}"} for i in range(20)])
    for r in batch["Records"]:
        put.setdefault(r["ShardId"], []).append(int(r["SequenceNumber"]))
    for seqs in put.values():
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    def one(i: int) -> tuple[str, int]:
        r = kin.put_record(StreamName=name, Data=b"c", PartitionKey=f"c{i}")
        return r["ShardId"], int(r["SequenceNumber"])

    before = {sid: max(seqs) for sid, seqs in put.items()}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for sid, seq in pool.map(one, range(40)):
            assert seq > before[sid]
            put[sid].append(seq)
    for sid, seqs in put.items():
        read = [int(r["SequenceNumber"]) for r in read_all(kin, name, sid)]
        assert read == sorted(seqs) and len(set(read)) == len(read)


def test_iterator_types(kin):
    name = new_stream(kin)
    shard = "shardId-000000000000"
    latest = kin.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    seqs = [kin.put_record(StreamName=name, Data=b"r%d" % i, PartitionKey="k")["SequenceNumber"] for i in range(4)]
    records = read_all(kin, name, shard)
    assert [r["SequenceNumber"] for r in records] == seqs
    assert [r["Data"] for r in records] == [b"r0", b"r1", b"r2", b"r3"]
    assert all(r["PartitionKey"] == "k" for r in records)

    assert [r["Data"] for r in kin.get_records(ShardIterator=latest)["Records"]] == [b"r0", b"r1", b"r2", b"r3"]
    assert read_all(kin, name, shard, "LATEST") == []
    at = read_all(kin, name, shard, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1])
    assert [r["SequenceNumber"] for r in at] == seqs[1:]
    after = read_all(kin, name, shard, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1])
    assert [r["SequenceNumber"] for r in after] == seqs[2:]
    assert read_all(kin, name, shard, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[-1]) == []

    arrivals = [r["ApproximateArrivalTimestamp"] for r in records]
    assert arrivals == sorted(arrivals)
    # boto3 sends JSON-protocol timestamps in whole seconds.
    pivot = int(arrivals[2].timestamp())
    from_ts = read_all(kin, name, shard, "AT_TIMESTAMP", Timestamp=pivot)
    expected = [r["SequenceNumber"] for r in records if r["ApproximateArrivalTimestamp"].timestamp() >= pivot]
    assert [r["SequenceNumber"] for r in from_ts] == expected and seqs[2] in expected
    old = read_all(kin, name, shard, "AT_TIMESTAMP", Timestamp=time.time() - 3600)
    assert [r["SequenceNumber"] for r in old] == seqs

    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="AT_TIMESTAMP")
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="AT_TIMESTAMP",
                               Timestamp=time.time() + 3600)
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="AT_SEQUENCE_NUMBER")
    other = new_stream(kin)
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.get_shard_iterator(StreamName=other, ShardId=shard, ShardIteratorType="AT_SEQUENCE_NUMBER",
                               StartingSequenceNumber=seqs[0])
    with pytest.raises(kin.exceptions.InvalidArgumentException):
        kin.get_records(ShardIterator="not-an-iterator")


def test_get_records_paging_and_millis_behind(kin):
    name = new_stream(kin)
    payloads = [bytes([i, 0, 255]) * (i + 1) for i in range(25)]
    kin.put_records(StreamName=name, Records=[{"Data": p, "PartitionKey": "k"} for p in payloads])
    first = kin.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                   ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    # Iterators are not consumed: the same one may be read again until it expires.
    behind = wait_for(lambda: kin.get_records(ShardIterator=first, Limit=10)["MillisBehindLatest"], timeout=10)
    assert behind > 0
    got, it, pages = [], first, []
    while True:
        resp = kin.get_records(ShardIterator=it, Limit=10)
        pages.append(len(resp["Records"]))
        got += [r["Data"] for r in resp["Records"]]
        it = resp["NextShardIterator"]
        if len(got) == len(payloads):
            assert resp["MillisBehindLatest"] == 0
            break
        assert resp["MillisBehindLatest"] > 0
    assert pages == [10, 10, 5] and got == payloads
    empty = kin.get_records(ShardIterator=it)
    assert empty["Records"] == [] and empty["MillisBehindLatest"] == 0 and empty["NextShardIterator"]
    kin.put_record(StreamName=name, Data=b"late", PartitionKey="k")
    assert [r["Data"] for r in kin.get_records(ShardIterator=empty["NextShardIterator"])["Records"]] == [b"late"]

    kin.delete_stream(StreamName=name)
    with pytest.raises(kin.exceptions.ResourceNotFoundException):
        kin.get_records(ShardIterator=it)


# -- timers and durability (own servers) ---------------------------------------------------------------------

def test_iterators_expire(own_server):
    srv = own_server(FAAS_STREAMS__ITERATOR_TTL="0.5")
    kin = srv.client("kinesis")
    try:
        name = new_stream(kin)
        it = kin.get_shard_iterator(StreamName=name, ShardId="shardId-000000000000",
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]

        def expired() -> bool:
            try:
                kin.get_records(ShardIterator=it)
            except kin.exceptions.ExpiredIteratorException as exc:
                assert "Iterator expired" in exc.response["Error"]["Message"]
                return True
            return False

        wait_for(expired, timeout=10)
    finally:
        kin.close()


def test_creating_then_active(own_server):
    srv = own_server(FAAS_STREAMS__CREATING_DELAY="1.0")
    kin = srv.client("kinesis")
    try:
        name = unique("stream")
        kin.create_stream(StreamName=name, ShardCount=1)
        assert kin.describe_stream(StreamName=name)["StreamDescription"]["StreamStatus"] == "CREATING"
        with pytest.raises(kin.exceptions.ResourceNotFoundException):
            kin.put_record(StreamName=name, Data=b"x", PartitionKey="k")
        with pytest.raises(kin.exceptions.ResourceInUseException):
            kin.delete_stream(StreamName=name)
        kin.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        kin.put_record(StreamName=name, Data=b"x", PartitionKey="k")
    finally:
        kin.close()


def test_retention_trims_old_records(own_server):
    # One retention hour lasts 0.1 s: the default 24 hours pass in 2.4 s.
    srv = own_server(FAAS_STREAMS__RETENTION_HOUR_SECONDS="0.1", FAAS_STREAMS__TRIM_INTERVAL="0.2")
    kin = srv.client("kinesis")
    try:
        short, long = new_stream(kin), new_stream(kin)
        kin.increase_stream_retention_period(StreamName=long, RetentionPeriodHours=2000)
        for name in (short, long):
            kin.put_records(StreamName=name, Records=[{"Data": b"%d" % i, "PartitionKey": "k"} for i in range(3)])
        assert len(read_all(kin, short)) == 3
        wait_for(lambda: read_all(kin, short) == [], timeout=20)
        assert len(read_all(kin, long)) == 3
        seq = kin.put_record(StreamName=short, Data=b"new", PartitionKey="k")["SequenceNumber"]
        assert [r["SequenceNumber"] for r in read_all(kin, short)] == [seq]
    finally:
        kin.close()


def test_records_survive_sigkill(own_server):
    srv = own_server()
    kin = srv.client("kinesis")
    try:
        name = new_stream(kin, shards=2)
        seqs = {kin.put_record(StreamName=name, Data=b"one", PartitionKey="a")["SequenceNumber"]}
        batch = kin.put_records(StreamName=name, Records=[{"Data": b"%d" % i, "PartitionKey": f"k{i}"}
                                                          for i in range(20)])
        seqs |= {r["SequenceNumber"] for r in batch["Records"]}
        it = kin.get_shard_iterator(StreamName=name, ShardId="shardId-000000000001",
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        srv.stop(signal.SIGKILL)
        srv.start()
        shards = [s["ShardId"] for s in kin.list_shards(StreamName=name)["Shards"]]
        read = {r["SequenceNumber"]: r for sid in shards for r in read_all(kin, name, sid)}
        assert set(read) == seqs
        assert sorted(r["Data"] for r in read.values()) == sorted([b"one"] + [b"%d" % i for i in range(20)])
        assert kin.get_records(ShardIterator=it)["Records"]  # an iterator outlives the restart
        after = kin.put_record(StreamName=name, Data=b"two", PartitionKey="a")
        assert int(after["SequenceNumber"]) > max(int(s) for s in seqs if read[s]["PartitionKey"] == "a")
    finally:
        kin.close()


# -- the interface event source mappings poll, and the retention pass, in-process ----------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def streams(tmp_path):
    db = Database(tmp_path / "streams.db")
    await db.open()
    clock = Clock()
    svc = Streams(db, Arns("us-east-1", ACCOUNT), StreamsConfig(), clock=clock)
    yield svc, clock
    await svc.close()
    await db.close()


async def test_internal_interface(streams):
    svc, clock = streams
    arn = svc.arn("feed")
    assert not await svc.exists(arn)
    stream = await svc.create("feed", 2, None)
    assert await svc.exists(arn) and not await svc.exists(svc.arn("other"))
    assert not await svc.exists(f"arn:aws:kinesis:eu-west-1:{ACCOUNT}:stream/feed")
    assert await svc.describe(arn) == ["shardId-000000000000", "shardId-000000000001"]
    assert await svc.latest_sequence(arn, "shardId-000000000000") is None

    put = []
    for i in range(5):
        clock.now += 1
        [r] = await svc.put(stream, [("k", b"%d" % i, "0")])
        put.append(r.sequence_number)
    assert await svc.latest_sequence(arn, "shardId-000000000000") == put[-1]
    records = await svc.read(arn, "shardId-000000000000", None, 10)
    assert [r.sequence_number for r in records] == put
    assert [r.data for r in records] == [b"0", b"1", b"2", b"3", b"4"]
    assert records[0].partition_key == "k" and records[0].approximate_arrival == 1_700_000_001.0
    assert [r.data for r in await svc.read(arn, "shardId-000000000000", put[1], 2)] == [b"2", b"3"]
    at = await svc.read(arn, "shardId-000000000000", None, 10, at_timestamp=1_700_000_004.0)
    assert [r.data for r in at] == [b"3", b"4"]
    horizon = await svc.read(arn, "shardId-000000000000", None, 1, from_trim_horizon=True)
    assert [r.data for r in horizon] == [b"0"]
    assert await svc.read(arn, "shardId-000000000001", None, 10) == []

    with pytest.raises(Exception) as exc:
        await svc.describe(svc.arn("other"))
    assert exc.value.code == "ResourceNotFoundException"
    with pytest.raises(Exception) as exc:
        await svc.read(arn, "shardId-000000000009", None, 10)
    assert exc.value.code == "ResourceNotFoundException"


async def test_trim_pass_and_iterator_expiry(streams):
    svc, clock = streams
    stream = await svc.create("feed", 1, None)
    arn = svc.arn("feed")
    await svc.put(stream, [("k", b"old", None)])
    it = await svc.shard_iterator("feed", "shardId-000000000000", "TRIM_HORIZON", None, None)
    clock.now += 23 * 3600
    await svc.put(stream, [("k", b"newer", None)])
    assert await svc.run_once() == 0
    clock.now += 2 * 3600
    with pytest.raises(Exception) as exc:
        await svc.get_records(it, None)
    assert exc.value.code == "ExpiredIteratorException"
    assert await svc.run_once() == 1
    assert [r.data for r in await svc.read(arn, "shardId-000000000000", None, 10)] == [b"newer"]
    # The latest sequence number stays after its record is trimmed, so LATEST readers do not go back.
    clock.now += 48 * 3600
    last = await svc.latest_sequence(arn, "shardId-000000000000")
    assert await svc.run_once() == 1 and await svc.latest_sequence(arn, "shardId-000000000000") == last
    it = await svc.shard_iterator("feed", "shardId-000000000000", "LATEST", None, None)
    await svc.put(stream, [("k", b"next", None)])
    batch = await svc.get_records(it, None)
    assert [r.data for r in batch.records] == [b"next"] and int(batch.records[0].sequence_number) > int(last)
