-- Aliases: a name pointing at a published version (or $LATEST), optionally sharing traffic with a second one.
CREATE TABLE aliases (
    function_name    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    function_version TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    routing          TEXT NOT NULL DEFAULT '{}',
    revision_id      TEXT NOT NULL,
    PRIMARY KEY (function_name, name)
);
