-- Jobs (issue 15): an action that can take longer than about a second (provision, install,
-- initdb, clone, rewind, machine removal) runs as a job the loop never waits on. A row is
-- written when it starts and updated with its progress and outcome; `running` rows whose owner
-- is not the current operator were interrupted by an operator restart and are redone.
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  cluster TEXT NOT NULL,
  node TEXT NOT NULL,
  -- the node machine's actor it runs (cloneStandby, installPostgres, ...)
  kind TEXT NOT NULL,
  rule_id TEXT NOT NULL,
  from_state TEXT NOT NULL,
  to_state TEXT NOT NULL,
  -- the primary a standby is cloned or rewound from, if any
  source TEXT,
  started_at INTEGER NOT NULL,
  deadline_at INTEGER NOT NULL,
  done_bytes INTEGER,
  total_bytes INTEGER,
  progress_at INTEGER,
  state TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
  finished_at INTEGER,
  message TEXT NOT NULL DEFAULT '',
  -- the operator process that runs it (a token unique per process)
  owner TEXT NOT NULL
);
CREATE INDEX jobs_by_cluster_state ON jobs (cluster, state);
