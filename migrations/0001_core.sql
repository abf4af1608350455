-- dockhand core schema: deliveries, deploys and their steps, and what each app runs now.
-- Forward-only: never edit this file once landed; add 0002_*.sql instead.
-- Times are unix milliseconds (UTC); the API renders them as RFC 3339.

-- One row per webhook delivery whose signature verified. Written before the HTTP answer, so an
-- acknowledged delivery is never lost; the unique key makes a redelivery a no-op.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    delivery    TEXT    NOT NULL,            -- X-GitHub-Delivery
    hook_id     TEXT    NOT NULL DEFAULT '', -- X-GitHub-Hook-ID ('' when absent)
    event       TEXT    NOT NULL,            -- X-GitHub-Event
    repository  TEXT,                        -- repository.full_name, when the payload has one
    git_ref     TEXT,
    after_sha   TEXT,
    outcome     TEXT    NOT NULL,            -- 'deploy' | 'ignored' | 'ping'
    reason      TEXT,                        -- why it was ignored
    received_at INTEGER NOT NULL,
    UNIQUE (delivery, hook_id)
);

-- One row per deploy. 'queued' and 'running' are the only non-terminal statuses; a crash leaves
-- 'running' rows behind, which startup turns into 'interrupted'.
CREATE TABLE deploys (
    id            INTEGER PRIMARY KEY,
    app           TEXT    NOT NULL,
    delivery_id   INTEGER REFERENCES deliveries(id),
    trigger       TEXT    NOT NULL,          -- 'push' | 'manual' | 'rollback'
    actor         TEXT,                      -- pusher or token name
    git_ref       TEXT,                      -- full ref name that was pushed or asked for
    requested_sha TEXT,                      -- the payload's `after` (may be a tag object)
    forced        INTEGER NOT NULL DEFAULT 0,
    from_commit   TEXT,                      -- what the volume held when the deploy started
    to_commit     TEXT,                      -- the commit (tags peeled) being deployed
    path          TEXT,                      -- 'fast' | 'full' | NULL before planning
    reason        TEXT,                      -- why this path, or why nothing was done
    status        TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
                                                     'superseded', 'stale', 'ignored', 'interrupted')),
    superseded_by INTEGER REFERENCES deploys(id),
    error         TEXT,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER
);
CREATE INDEX deploys_by_app ON deploys (app, id DESC);
CREATE INDEX deploys_by_status ON deploys (status) WHERE status IN ('queued', 'running');
CREATE INDEX deploys_by_delivery ON deploys (delivery_id);

-- Every stage of a deploy: what ran, its output, whether it worked. ok is NULL while running.
CREATE TABLE deploy_steps (
    id          INTEGER PRIMARY KEY,
    deploy_id   INTEGER NOT NULL REFERENCES deploys(id),
    stage       TEXT    NOT NULL,
    detail      TEXT,
    output      TEXT,
    ok          INTEGER,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX deploy_steps_by_deploy ON deploy_steps (deploy_id, id);

-- The last good state of each app: the commit its volume holds. Changed only in the same
-- transaction that marks a deploy 'succeeded', so it is always a commit that fully deployed.
CREATE TABLE app_state (
    app        TEXT    PRIMARY KEY,
    commit_sha TEXT    NOT NULL,
    deploy_id  INTEGER NOT NULL REFERENCES deploys(id),
    updated_at INTEGER NOT NULL
);
