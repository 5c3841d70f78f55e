-- Provisioned concurrency: instances kept initialised for a published version or an alias.
CREATE TABLE provisioned_concurrency (
    function_name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier     TEXT NOT NULL,
    requested     INTEGER NOT NULL,
    last_modified TEXT NOT NULL,
    PRIMARY KEY (function_name, qualifier)
);
