-- The full path: what image a deploy ran, and which container serves each app.

-- The image reference a full deploy ran and the digest it resolved to (so a later rollback runs
-- exactly that image even if the tag moved).
ALTER TABLE deploys ADD COLUMN image TEXT;
ALTER TABLE deploys ADD COLUMN digest TEXT;

-- The live container of an app with a container spec, written with the deploy's success.
ALTER TABLE app_state ADD COLUMN container_id TEXT;
ALTER TABLE app_state ADD COLUMN image TEXT;
ALTER TABLE app_state ADD COLUMN digest TEXT;
ALTER TABLE app_state ADD COLUMN port INTEGER;
