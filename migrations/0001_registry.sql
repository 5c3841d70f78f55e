-- Functions, their versions ($LATEST and published numbers) and the code packages they use.
CREATE TABLE functions (
    name                 TEXT PRIMARY KEY,
    created_at           TEXT NOT NULL,
    next_version         INTEGER NOT NULL DEFAULT 1,
    tags                 TEXT NOT NULL DEFAULT '{}',
    reserved_concurrency INTEGER
);

CREATE TABLE code_packages (
    sha256        TEXT PRIMARY KEY,
    size          INTEGER NOT NULL,
    unzipped_size INTEGER NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE versions (
    function_name     TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    version           TEXT NOT NULL,
    config            TEXT NOT NULL,
    code_sha256       TEXT NOT NULL REFERENCES code_packages(sha256),
    revision_id       TEXT NOT NULL,
    last_modified     TEXT NOT NULL,
    state             TEXT NOT NULL,
    state_reason      TEXT,
    state_reason_code TEXT,
    last_update       TEXT NOT NULL DEFAULT 'Successful',
    PRIMARY KEY (function_name, version)
);

CREATE INDEX versions_by_code ON versions(code_sha256);
