-- Notifications: every status a deploy takes, recorded by triggers in the same transaction as
-- the change (so nothing between a commit and a crash is lost), and an outbox of rendered
-- messages per receiver, sent with retries, kept across restarts.
-- Forward-only: never edit this file once landed.

-- The first line of the target commit's message, recorded with the plan.
ALTER TABLE deploys ADD COLUMN subject TEXT;

-- One row per status a deploy entered, plus 'planned' when its path was chosen.
CREATE TABLE deploy_transitions (
    id        INTEGER PRIMARY KEY,
    deploy_id INTEGER NOT NULL REFERENCES deploys(id) ON DELETE CASCADE,
    status    TEXT    NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX deploy_transitions_by_deploy ON deploy_transitions (deploy_id);

CREATE TRIGGER deploy_transition_on_insert AFTER INSERT ON deploys BEGIN
    INSERT INTO deploy_transitions (deploy_id, status, at)
    VALUES (NEW.id, NEW.status, NEW.created_at);
END;

CREATE TRIGGER deploy_transition_on_status AFTER UPDATE OF status ON deploys
WHEN NEW.status IS NOT OLD.status BEGIN
    INSERT INTO deploy_transitions (deploy_id, status, at)
    VALUES (NEW.id, NEW.status, COALESCE(NEW.finished_at, NEW.started_at, NEW.created_at));
END;

CREATE TRIGGER deploy_transition_on_plan AFTER UPDATE OF path ON deploys
WHEN OLD.path IS NULL AND NEW.path IS NOT NULL BEGIN
    INSERT INTO deploy_transitions (deploy_id, status, at)
    VALUES (NEW.id, 'planned', COALESCE(NEW.started_at, NEW.created_at));
END;

-- How far each receiver (`[[notify]] name`) has read deploy_transitions.
CREATE TABLE notify_cursors (
    receiver      TEXT    PRIMARY KEY,
    transition_id INTEGER NOT NULL
);

-- A rendered message for one receiver; its body is sent byte for byte on every attempt.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY,
    receiver      TEXT    NOT NULL,
    transition_id INTEGER NOT NULL,
    app           TEXT    NOT NULL,
    deploy_id     INTEGER NOT NULL,  -- no reference: a pruned deploy keeps its messages
    event         TEXT    NOT NULL,
    body          BLOB    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       INTEGER NOT NULL,
    last_error    TEXT,
    delivered_at  INTEGER,
    gave_up_at    INTEGER,
    created_at    INTEGER NOT NULL,
    UNIQUE (receiver, transition_id)
);
CREATE INDEX outbox_pending ON outbox (receiver, id) WHERE delivered_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX outbox_by_app ON outbox (app, id);
