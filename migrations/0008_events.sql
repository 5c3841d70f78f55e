-- EventBridge: buses, rules, targets, and the outbox of deliveries accepted but not yet handed to a target.
CREATE TABLE event_buses (
    name          TEXT PRIMARY KEY,
    description   TEXT,
    created_at    REAL NOT NULL,
    last_modified REAL NOT NULL
);

INSERT INTO event_buses(name, created_at, last_modified)
VALUES ('default', CAST(strftime('%s', 'now') AS REAL), CAST(strftime('%s', 'now') AS REAL));

CREATE TABLE event_rules (
    bus           TEXT NOT NULL REFERENCES event_buses(name),
    name          TEXT NOT NULL,
    event_pattern TEXT,
    schedule      TEXT,
    state         TEXT NOT NULL,
    description   TEXT,
    role_arn      TEXT,
    -- Schedules: rate() ticks count from `anchor`; `last_fired` is the last tick fired (epoch seconds).
    anchor        REAL NOT NULL,
    last_fired    REAL,
    PRIMARY KEY (bus, name)
);

CREATE TABLE event_targets (
    bus      TEXT NOT NULL,
    rule     TEXT NOT NULL,
    id       TEXT NOT NULL,
    arn      TEXT NOT NULL,
    spec     TEXT NOT NULL,  -- the Target as PutTargets gave it (JSON)
    position INTEGER NOT NULL,
    PRIMARY KEY (bus, rule, id),
    FOREIGN KEY (bus, rule) REFERENCES event_rules(bus, name) ON DELETE CASCADE
);

CREATE TABLE event_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    target_arn       TEXT NOT NULL,
    body             TEXT NOT NULL,
    message_group_id TEXT,
    rule_arn         TEXT NOT NULL,
    target_id        TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    expires_at       REAL NOT NULL,
    next_attempt     REAL NOT NULL
);
CREATE INDEX event_deliveries_due ON event_deliveries(next_attempt);
