-- Layers: one row per layer name, holding the counter that numbers its versions. The row outlives its
-- versions, so a number is never handed out twice (after deleting versions 1 and 2 the next one is 3).
CREATE TABLE layers (
    name         TEXT PRIMARY KEY,
    next_version INTEGER NOT NULL DEFAULT 1,
    created_at   TEXT NOT NULL
);

-- Published layer versions. The JSON lists are NULL when the input was not sent and '[]' when it was sent
-- empty (AWS echoes the key only in the second case). `policy` is a JSON list of statements (NULL: no policy)
-- and `policy_revision_id` changes with every statement added or removed.
CREATE TABLE layer_versions (
    layer_name               TEXT NOT NULL REFERENCES layers(name),
    version                  INTEGER NOT NULL,
    description              TEXT NOT NULL DEFAULT '',
    license_info             TEXT,
    compatible_runtimes      TEXT,
    compatible_architectures TEXT,
    code_sha256              TEXT NOT NULL REFERENCES code_packages(sha256),
    created_date             TEXT NOT NULL,
    policy                   TEXT,
    policy_revision_id       TEXT,
    PRIMARY KEY (layer_name, version)
);

CREATE INDEX layer_versions_by_code ON layer_versions(code_sha256);
