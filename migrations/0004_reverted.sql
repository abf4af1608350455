-- The health-checked fast path: a deploy whose new version failed its check and was put back.
-- Forward-only: never edit this file once landed.

-- 1 when the deploy failed after changing the app and dockhand reverted it to the previous
-- commit (the record's steps show the check, the restore, the reload and the verification).
ALTER TABLE deploys ADD COLUMN reverted INTEGER NOT NULL DEFAULT 0;
