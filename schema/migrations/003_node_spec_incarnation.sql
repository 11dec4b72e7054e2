-- Scale-in (issue 19). A node that leaves the spec must still be reachable for its removal:
-- keep the NodeSpec it was provisioned with (address, sizes, host), so the fence, the delete and
-- the slot drop reach the right host. NULL for nodes recorded before this migration.
ALTER TABLE nodes ADD COLUMN spec_json TEXT;

-- A cluster deleted and created again under the same name starts with its own event history:
-- the id of the last event before this incarnation was created. `get events --cluster X` shows
-- the events after it unless asked for every incarnation. 0 for clusters created before this
-- migration (their whole history).
ALTER TABLE clusters ADD COLUMN events_after_id INTEGER NOT NULL DEFAULT 0;
