-- The proxy's maintenance switch, as last set over the API (it survives restarts).
-- Forward-only: never edit this file once landed.

-- One row per app whose switch was set over the API; an app without a row starts with its
-- config's `proxy.maintenance`.
CREATE TABLE app_maintenance (
    app        TEXT    PRIMARY KEY,
    enabled    INTEGER NOT NULL,
    changed_by TEXT    NOT NULL,  -- token name
    changed_at INTEGER NOT NULL
);
