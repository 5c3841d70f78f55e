-- Event source mappings and the positions their stream pollers have reached.
CREATE TABLE event_source_mappings (
    uuid          TEXT PRIMARY KEY,
    function_name TEXT NOT NULL,
    source_arn    TEXT NOT NULL,
    config        TEXT NOT NULL,
    state         TEXT NOT NULL,
    state_reason  TEXT NOT NULL,
    last_modified REAL NOT NULL,
    last_result   TEXT
);
CREATE INDEX event_source_mappings_by_function ON event_source_mappings(function_name);

CREATE TABLE esm_checkpoints (
    uuid            TEXT NOT NULL REFERENCES event_source_mappings(uuid) ON DELETE CASCADE,
    shard_id        TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    state           TEXT,
    PRIMARY KEY (uuid, shard_id)
);
