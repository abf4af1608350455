-- Promote the exact artifact: a deploy of one app that runs the commit and image digest a
-- deploy of another app (of the same repository) ran, recorded with trigger 'promote'.
-- Forward-only: never edit this file once landed.

-- The deploy (of another app) whose commit and image this one runs; NULL once pruned.
ALTER TABLE deploys ADD COLUMN promoted_from INTEGER REFERENCES deploys(id);
CREATE INDEX deploys_by_promoted_from ON deploys (promoted_from) WHERE promoted_from IS NOT NULL;
