-- Operating dockhand over the API: manual deploys with a path override, rollbacks that re-run a
-- recorded deploy, and app locks under which pushes are recorded as 'locked' instead of deployed.
--
-- deploys.status has a CHECK listing the statuses, and SQLite cannot alter a CHECK. The table is
-- rebuilt, keeping every column of 0001 and 0002 with the same name, type and meaning, and every
-- id — deploy_steps, app_state and superseded_by refer to deploys by id. Foreign keys stay on:
-- `defer_foreign_keys` postpones their check to the end of this migration's transaction. The
-- rows go to a plain holding table, `deploys` is dropped (its children now count as dangling)
-- and created again under its own name, and the rows are inserted back in id order — each
-- insert settles the children that refer to it. Anything still dangling at the end fails the
-- migration, which then changes nothing. (Renaming a rebuilt table into place instead would
-- leave the dangling count of the drop behind and fail every time.)

PRAGMA defer_foreign_keys = ON;

CREATE TABLE deploys_0002 AS SELECT * FROM deploys;
DROP TABLE deploys;

CREATE TABLE deploys (
    id             INTEGER PRIMARY KEY,
    app            TEXT    NOT NULL,
    delivery_id    INTEGER REFERENCES deliveries(id),
    trigger        TEXT    NOT NULL,          -- 'push' | 'manual' | 'rollback'
    actor          TEXT,                      -- pusher, or the API token's name
    git_ref        TEXT,                      -- full ref name that was pushed or asked for
    requested_sha  TEXT,                      -- the payload's `after`; for API deploys the resolved full SHA
    forced         INTEGER NOT NULL DEFAULT 0, -- ancestry not checked: a forced push, or asked for over the API
    from_commit    TEXT,
    to_commit      TEXT,
    path           TEXT,
    reason         TEXT,
    status         TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
                                                      'superseded', 'stale', 'ignored', 'interrupted',
                                                      'locked')),
    superseded_by  INTEGER REFERENCES deploys(id),
    error          TEXT,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    image          TEXT,                      -- 0002
    digest         TEXT,                      -- 0002
    -- New: the path asked for over the API ('fast' | 'full'), which wins over the planner.
    requested_path TEXT    CHECK (requested_path IN ('fast', 'full')),
    -- New: for a rollback, the deploy whose commit (and, on the full path, recorded digest) it
    -- runs again; NULL when no deploy of the app ever ran the target commit.
    rollback_of    INTEGER REFERENCES deploys(id)
);

INSERT INTO deploys (id, app, delivery_id, trigger, actor, git_ref, requested_sha, forced,
                     from_commit, to_commit, path, reason, status, superseded_by, error,
                     created_at, started_at, finished_at, image, digest)
SELECT id, app, delivery_id, trigger, actor, git_ref, requested_sha, forced,
       from_commit, to_commit, path, reason, status, superseded_by, error,
       created_at, started_at, finished_at, image, digest
FROM deploys_0002 ORDER BY id;

DROP TABLE deploys_0002;

CREATE INDEX deploys_by_app ON deploys (app, id DESC);
CREATE INDEX deploys_by_status ON deploys (status) WHERE status IN ('queued', 'running');
CREATE INDEX deploys_by_delivery ON deploys (delivery_id);
-- Rollback targets: the newest succeeded deploy of a commit or tag.
CREATE INDEX deploys_by_commit ON deploys (app, to_commit) WHERE status = 'succeeded';

-- A locked app: pushes are recorded as 'locked' deploys and not run; manual deploys and
-- rollbacks answer 409 naming who locked it, when and why, unless forced.
CREATE TABLE app_locks (
    app       TEXT    PRIMARY KEY,
    reason    TEXT    NOT NULL,
    locked_by TEXT    NOT NULL,                -- token name
    locked_at INTEGER NOT NULL
);
