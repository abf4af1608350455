-- GitHub deployments: the deployment GitHub created for each deploy, and the last state
-- dockhand posted to it, so a retried or restarted send resumes where it stopped instead of
-- creating or posting again. Forward-only: never edit this file once landed.

CREATE TABLE github_deployments (
    deploy_id   INTEGER PRIMARY KEY,  -- no reference: a pruned deploy keeps its GitHub record
    app         TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    github_id   INTEGER NOT NULL,
    state       TEXT,                 -- the last deployment status posted, NULL before the first
    created_at  INTEGER NOT NULL
);
CREATE INDEX github_deployments_by_app ON github_deployments (app, environment, deploy_id);

-- Set when an attempt starts and cleared by its outcome: a message found set was cut off
-- mid-send (a crash, a restart), and its receiver may have acted on it already.
ALTER TABLE outbox ADD COLUMN begun INTEGER NOT NULL DEFAULT 0;
