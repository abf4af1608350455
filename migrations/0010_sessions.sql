-- Dashboard sign-ins. A session is a random cookie value exchanged for an API token at
-- /ui/sign-in; only the value's SHA-256 is kept, so a copy of the database opens no session.
-- The token is named, not copied: a token removed from the config ends its sessions, and a
-- token made read-only is read-only in them at once. Forward-only: never edit once landed.

CREATE TABLE sessions (
    digest     BLOB    PRIMARY KEY,  -- SHA-256 of the cookie's value
    token_name TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
