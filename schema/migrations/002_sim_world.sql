-- The simulated provider's world, kept across `pgop serve` restarts (one row).
CREATE TABLE sim_world (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  json TEXT NOT NULL,
  saved_at INTEGER NOT NULL
);
