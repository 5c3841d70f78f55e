-- Asynchronous invocations: accepted events, committed before the 202, removed once handled.
CREATE TABLE async_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    TEXT NOT NULL UNIQUE,
    function_name TEXT NOT NULL,
    qualifier     TEXT,
    payload       BLOB NOT NULL,
    enqueued_at   REAL NOT NULL,
    due_at        REAL NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    running       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX async_events_due ON async_events(running, due_at);

-- PutFunctionEventInvokeConfig: per function and qualifier ($LATEST, a version or an alias).
CREATE TABLE event_invoke_configs (
    function_name  TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier      TEXT NOT NULL,
    max_retries    INTEGER,
    max_age        INTEGER,
    on_success     TEXT,
    on_failure     TEXT,
    last_modified  REAL NOT NULL,
    PRIMARY KEY (function_name, qualifier)
);

-- Events given up on, by function and reason, for operators.
CREATE TABLE async_dropped (
    function_name TEXT NOT NULL,
    reason        TEXT NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (function_name, reason)
);
