-- pgop store, version 1. Applied by src/store/store.ts inside one IMMEDIATE transaction; the
-- runner records the version in schema_migrations. Never edit an applied migration: add 002_*.sql.
-- Times are milliseconds since the epoch (the injected clock). Secrets are never stored: specs
-- hold references ({env}|{file}) only.

CREATE TABLE clusters (
  name                TEXT PRIMARY KEY NOT NULL,
  generation          INTEGER NOT NULL,
  spec_json           TEXT NOT NULL,
  spec_hash           TEXT NOT NULL,
  spec_source         TEXT NOT NULL,
  created_at          INTEGER NOT NULL,
  updated_at          INTEGER NOT NULL,
  deletion_requested  INTEGER NOT NULL DEFAULT 0 CHECK (deletion_requested IN (0, 1)),
  phase               TEXT NOT NULL DEFAULT 'Pending',
  primary_node        TEXT,
  observed_generation INTEGER NOT NULL DEFAULT 0,
  message             TEXT NOT NULL DEFAULT ''
);

-- Every generation ever applied (including 1), for `pgop history` and diffs between generations.
CREATE TABLE spec_history (
  cluster     TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
  generation  INTEGER NOT NULL,
  spec_hash   TEXT NOT NULL,
  spec_json   TEXT NOT NULL,
  spec_source TEXT NOT NULL,
  applied_at  INTEGER NOT NULL,
  PRIMARY KEY (cluster, generation)
);

CREATE TABLE nodes (
  cluster            TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
  name               TEXT NOT NULL,
  state              TEXT NOT NULL,
  goal               TEXT,
  last_transition_at INTEGER NOT NULL,
  message            TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (cluster, name)
);

-- The latest ClusterObservation per cluster (JSON), overwritten each pass.
CREATE TABLE observations (
  cluster TEXT PRIMARY KEY NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
  at      INTEGER NOT NULL,
  json    TEXT NOT NULL
);

-- The audit log. No foreign key: events outlive the cluster they describe.
CREATE TABLE events (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  time       INTEGER NOT NULL,
  cluster    TEXT NOT NULL,
  node       TEXT,
  from_state TEXT,
  to_state   TEXT,
  rule_id    TEXT NOT NULL,
  reason     TEXT NOT NULL
);
CREATE INDEX events_cluster_id ON events (cluster, id);

-- SSH host keys pinned on first use.
CREATE TABLE host_keys (
  cluster   TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
  node      TEXT NOT NULL,
  algo      TEXT NOT NULL,
  key_b64   TEXT NOT NULL,
  pinned_at INTEGER NOT NULL,
  PRIMARY KEY (cluster, node)
);

-- Operator requests (e.g. switchover) queued by the CLI for the serving loop.
CREATE TABLE requests (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  cluster    TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
  kind       TEXT NOT NULL,
  args_json  TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  taken_at   INTEGER
);
CREATE INDEX requests_pending ON requests (cluster, id) WHERE taken_at IS NULL;

-- At most one `pgop serve` per store.
CREATE TABLE serve_lock (
  id           INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
  pid          INTEGER NOT NULL,
  hostname     TEXT NOT NULL,
  started_at   INTEGER NOT NULL,
  heartbeat_at INTEGER NOT NULL
);
