-- SNS-compatible topics and their subscriptions, and the outbox of published messages not yet delivered.
CREATE TABLE topics (
    arn                   TEXT PRIMARY KEY,
    name                  TEXT NOT NULL UNIQUE,
    fifo                  INTEGER NOT NULL DEFAULT 0,
    attributes            TEXT NOT NULL DEFAULT '{}',  -- JSON object: the attributes clients set
    tags                  TEXT NOT NULL DEFAULT '{}',  -- JSON object, in insertion order
    sequence              INTEGER NOT NULL DEFAULT 0,  -- last SequenceNumber given out (FIFO topics)
    subscriptions_deleted INTEGER NOT NULL DEFAULT 0,
    created_at            REAL NOT NULL
);

CREATE TABLE topic_subscriptions (
    arn        TEXT PRIMARY KEY,
    topic_arn  TEXT NOT NULL REFERENCES topics(arn) ON DELETE CASCADE,
    protocol   TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    UNIQUE (topic_arn, protocol, endpoint)
);

-- A published message, kept while deliveries of it are pending.
CREATE TABLE topic_messages (
    id              TEXT PRIMARY KEY,
    topic_arn       TEXT NOT NULL,
    message         TEXT NOT NULL,
    subject         TEXT,
    structured      INTEGER NOT NULL DEFAULT 0,  -- MessageStructure=json: one message per protocol
    attributes      TEXT NOT NULL DEFAULT '{}',  -- JSON: name -> {"Type", "Value"}
    group_id        TEXT,
    dedup_id        TEXT,
    sequence_number TEXT,
    published_at    REAL NOT NULL
);

-- One pending delivery of a message to a subscription. A subscription that is gone by delivery time drops it.
CREATE TABLE topic_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id       TEXT NOT NULL REFERENCES topic_messages(id) ON DELETE CASCADE,
    subscription_arn TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    due_at           REAL NOT NULL
);
CREATE INDEX topic_deliveries_due ON topic_deliveries(due_at, id);
CREATE INDEX topic_deliveries_message ON topic_deliveries(message_id);
CREATE INDEX topic_deliveries_subscription ON topic_deliveries(subscription_arn, id);

-- FIFO topics: deduplication ids seen within the deduplication window.
CREATE TABLE topic_dedup (
    topic_arn       TEXT NOT NULL REFERENCES topics(arn) ON DELETE CASCADE,
    dedup_id        TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    expires_at      REAL NOT NULL,
    PRIMARY KEY (topic_arn, dedup_id)
) WITHOUT ROWID;
