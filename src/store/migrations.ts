// The store's schema: schema/migrations/<version>_<name>.sql, applied in version order when the
// store is opened. Cheap to import (see store.ts).

import type Database from 'better-sqlite3';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { internal, terminal } from '../errors.js';

export interface Migration {
  version: number;
  file: string;
}

const MIGRATION_FILE = /^(\d+)_[A-Za-z0-9_.-]+\.sql$/;

/** schema/migrations, whether this module runs from src/store/ (vitest) or dist/src/store/ (build). */
export function migrationsDirectory(): string {
  for (const rel of ['../../schema/migrations/', '../../../schema/migrations/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(dir)) return dir;
  }
  throw internal(`schema/migrations not found relative to ${fileURLToPath(import.meta.url)}`);
}

export function listMigrations(dir: string): Migration[] {
  const out: Migration[] = [];
  const seen = new Map<number, string>();
  for (const file of readdirSync(dir)) {
    const m = MIGRATION_FILE.exec(file);
    if (!m) continue;
    const version = Number(m[1]);
    const dup = seen.get(version);
    if (dup !== undefined) throw internal(`two migrations with version ${version}: ${dup} and ${file}`);
    seen.set(version, file);
    out.push({ version, file: join(dir, file) });
  }
  if (out.length === 0) throw internal(`no migrations in ${dir}`);
  return out.sort((a, b) => a.version - b.version);
}

/**
 * Apply pending migrations in version order. The fast path (everything applied) is two reads and
 * reads no migration file. Pending ones are applied in one IMMEDIATE transaction, re-checked
 * inside it so two processes opening a fresh store at once do not both apply them.
 */
export function migrate(db: Database.Database, migrations: Migration[], readonly: boolean): void {
  const latest = migrations[migrations.length - 1]!.version;
  const appliedVersions = (): Set<number> => {
    const exists = db
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
      .get();
    if (!exists) return new Set();
    return new Set(db.prepare('SELECT version FROM schema_migrations').pluck().all() as number[]);
  };
  const check = (applied: Set<number>): Migration[] => {
    const newest = Math.max(0, ...applied);
    if (newest > latest) {
      throw terminal(
        `store schema version ${newest} is newer than this pgop understands (${latest}): upgrade pgop`,
      );
    }
    return migrations.filter((m) => !applied.has(m.version));
  };

  if (check(appliedVersions()).length === 0) return;
  if (readonly) {
    throw terminal(
      `store schema is older than this pgop (latest ${latest}); ` +
        `run a writing command (e.g. pgop apply) to migrate it`,
    );
  }
  db.transaction(() => {
    db.exec(
      'CREATE TABLE IF NOT EXISTS schema_migrations ' +
        '(version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)',
    );
    const insert = db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)');
    for (const m of check(appliedVersions())) {
      try {
        db.exec(readFileSync(m.file, 'utf8'));
      } catch (err) {
        throw internal(`migration ${m.file} failed: ${(err as Error).message}`, err);
      }
      insert.run(m.version, Date.now());
    }
  }).immediate();
}
