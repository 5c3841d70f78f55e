-- Function URLs: one per function (qualifier '') and one per alias. Deleting the function deletes them; a URL
-- whose alias is deleted stays, and answers 403 until an alias of that name exists again.
CREATE TABLE function_urls (
    url_id        TEXT PRIMARY KEY,
    function_name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier     TEXT NOT NULL DEFAULT '',
    auth_type     TEXT NOT NULL,
    cors          TEXT,
    invoke_mode   TEXT,
    created_at    TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    UNIQUE (function_name, qualifier)
);
