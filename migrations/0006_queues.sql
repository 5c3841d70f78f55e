-- Built-in SQS-compatible queues. `attributes` holds the configured attributes as SQS spells them (a JSON
-- object of strings, defaults included). Ids are never reused (AUTOINCREMENT), so a queue deleted and created
-- again under the same name starts empty and old receipt handles cannot touch it.
CREATE TABLE queues (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    attributes    TEXT NOT NULL,
    tags          TEXT NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    last_modified INTEGER NOT NULL
);

-- One row per message. `seq` orders a queue's messages (a FIFO queue's SequenceNumber) and, with `receipt`
-- (the nonce of the latest receive), makes the receipt handle; AUTOINCREMENT so neither is handed out twice.
-- Times are epoch seconds: `visible_at` is when the message may next be received (after its delay or its
-- visibility timeout), `expires_at` ends its retention. A message moved to a dead-letter queue changes
-- `queue_id` and records where it came from in `dlq_source`.
CREATE TABLE queue_messages (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id          INTEGER NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    message_id        TEXT NOT NULL,
    body              TEXT NOT NULL,
    body_md5          TEXT NOT NULL,
    attributes        TEXT,
    attributes_md5    TEXT,
    trace_header      TEXT,
    group_id          TEXT,
    dedup_id          TEXT,
    sent_at           REAL NOT NULL,
    visible_at        REAL NOT NULL,
    expires_at        REAL NOT NULL,
    receive_count     INTEGER NOT NULL DEFAULT 0,
    first_received_at REAL,
    received_at       REAL,
    receipt           TEXT,
    dlq_source        TEXT
);

CREATE INDEX queue_messages_visible ON queue_messages(queue_id, visible_at);
-- FIFO delivery walks a queue's messages in order (only FIFO and grouped messages carry a group id).
CREATE INDEX queue_messages_order ON queue_messages(queue_id, seq) WHERE group_id IS NOT NULL;
CREATE INDEX queue_messages_expiry ON queue_messages(expires_at);

-- FIFO deduplication ids seen in the last five minutes, kept after their message is deleted. `dedup_key` is
-- the deduplication id, prefixed by the group id when the queue deduplicates per message group.
CREATE TABLE queue_dedup (
    queue_id   INTEGER NOT NULL REFERENCES queues(id) ON DELETE CASCADE,
    dedup_key  TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (queue_id, dedup_key)
) WITHOUT ROWID;

CREATE INDEX queue_dedup_expiry ON queue_dedup(expires_at);
