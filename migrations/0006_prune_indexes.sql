-- Pruning history in small batches: each batch clears the references that rows staying behind
-- hold to the rows going (`superseded_by`, `rollback_of`), and finds a delivery's deploys.
-- Without these indexes every batch scanned the whole deploys table.
-- Forward-only: never edit this file once landed.

CREATE INDEX deploys_by_superseded_by ON deploys (superseded_by) WHERE superseded_by IS NOT NULL;
CREATE INDEX deploys_by_rollback_of ON deploys (rollback_of) WHERE rollback_of IS NOT NULL;
