-- Cluster jobs (issue 17): a backup is a job of the cluster, not a step of a node. request_id
-- ties a job to the operator request that asked for it (`pgop backup` follows its job by it).
ALTER TABLE jobs ADD COLUMN request_id INTEGER;
CREATE INDEX jobs_by_request ON jobs (request_id) WHERE request_id IS NOT NULL;
