-- Built-in Kinesis-compatible data streams: streams, their shards and the records each shard holds.
-- Ids are never reused (AUTOINCREMENT), so an iterator of a deleted stream cannot read a new one of the same name.
CREATE TABLE streams (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE,
    mode            TEXT NOT NULL,
    retention_hours INTEGER NOT NULL,
    max_record_kib  INTEGER NOT NULL,
    created_at      REAL NOT NULL,
    active_at       REAL NOT NULL
);

-- Hash keys are 128-bit integers, kept as decimal text. `last_seq` is the counter of the shard's latest
-- sequence number: it only grows, even after the records it numbered are trimmed.
CREATE TABLE stream_shards (
    stream_id     INTEGER NOT NULL REFERENCES streams(id) ON DELETE CASCADE,
    shard_index   INTEGER NOT NULL,
    starting_hash TEXT NOT NULL,
    ending_hash   TEXT NOT NULL,
    last_seq      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream_id, shard_index)
) WITHOUT ROWID;

CREATE TABLE stream_records (
    stream_id     INTEGER NOT NULL,
    shard_index   INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    partition_key TEXT NOT NULL,
    data          BLOB NOT NULL,
    arrival       REAL NOT NULL,
    PRIMARY KEY (stream_id, shard_index, seq),
    FOREIGN KEY (stream_id, shard_index) REFERENCES stream_shards(stream_id, shard_index) ON DELETE CASCADE
) WITHOUT ROWID;

-- AT_TIMESTAMP iterators and the retention trimmer look records up by arrival time within a shard.
CREATE INDEX stream_records_arrival ON stream_records(stream_id, shard_index, arrival);
