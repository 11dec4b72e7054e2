// `pgop restore --from SRC -f NEW.yaml`: a NEW cluster whose first primary is restored from SRC's
// pgBackRest stanza (spec.bootstrap.restore), up to a time, an LSN or the end of the archive.
// Never touches SRC: the new cluster gets its own name, stanza and servers.

import { parseDocument } from 'yaml';
import { EXIT } from '../../errors.js';
import { parseSpecText } from '../../spec/parse.js';
import type { RestoreSource } from '../../spec/types.js';
import { Store } from '../../store/store.js';
import { NotFoundError, UsageError } from '../errors.js';
import { enterLabHubIfNeeded } from '../lab-ns.js';
import { driveUntil, readSpec } from './apply.js';

export interface RestoreFlags {
  from: string;
  toTime?: string;
  toLsn?: string;
  latest?: boolean;
  set?: string;
  file: string;
  wait: boolean;
  timeout: number;
}

const PG_TIME = /^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}(:?\d{2})?)$/;

/** The target as postgres reads it; a time without a zone is refused (whose midnight?). */
function target(o: RestoreFlags): Pick<RestoreSource, 'targetTime' | 'targetLsn'> {
  const given = [o.toTime, o.toLsn, o.latest].filter((v) => v !== undefined && v !== false);
  if (given.length !== 1) throw new UsageError('cannot restore: give one of --to-time, --to-lsn, --latest');
  if (o.toLsn !== undefined) {
    if (!/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(o.toLsn))
      throw new UsageError(`cannot restore to LSN ${JSON.stringify(o.toLsn)}: expected e.g. 0/5000060`);
    return { targetLsn: o.toLsn.toUpperCase() };
  }
  if (o.toTime !== undefined) {
    if (!PG_TIME.test(o.toTime))
      throw new UsageError(
        `cannot restore to time ${JSON.stringify(o.toTime)}: expected e.g. "2026-12-04 10:15:00.123+00" ` +
          '(a date, a time and its zone)',
      );
    return { targetTime: o.toTime };
  }
  return {};
}

export async function restoreCommand(db: string, o: RestoreFlags): Promise<number> {
  const to = target(o);
  const own = readSpec(o.file, { checkHost: true }); // the file's own errors name its lines
  if (own.spec.bootstrap)
    throw new UsageError(
      `cannot restore into ${o.file}: it has a bootstrap section already (apply it instead)`,
    );
  if (o.wait) await enterLabHubIfNeeded(db);
  const store = Store.open(db);
  try {
    const src = store.getCluster(o.from);
    if (!src) throw new NotFoundError(`cannot restore from cluster ${o.from}: no such cluster`);
    const b = src.spec.backup;
    if (!b) throw new UsageError(`cannot restore from cluster ${o.from}: it has no backups (spec.backup)`);
    const name = own.spec.name;
    if (store.getCluster(name))
      throw new UsageError(`cannot restore into cluster ${name}: it exists (a restore makes a new cluster)`);
    const restore: RestoreSource = {
      stanza: o.from,
      repoPath: b.repo.path,
      ...(b.encryption ? { encryption: { passphrase: b.encryption.passphrase } } : {}),
      ...(o.set ? { set: o.set } : {}),
      ...to,
    };
    const doc = parseDocument(own.source);
    doc.setIn(['spec', 'bootstrap'], { restore });
    const parsed = parseSpecText(doc.toString(), `${o.file} (with bootstrap.restore from --from ${o.from})`, {
      checkHost: true,
    });
    const { generation } = store.applySpec(parsed.spec, parsed.hash, parsed.source, Date.now());
    const until = to.targetTime ?? to.targetLsn ?? 'the end of its archive';
    process.stdout.write(
      `cluster/${name} created (generation ${generation}): restoring ${o.from} up to ${until}\n`,
    );
    if (!o.wait) return EXIT.ok;
    const started = Date.now();
    const ready = () => {
      const c = store.getCluster(name);
      return c?.phase === 'Healthy' && !!c.primary;
    };
    const ok = await driveUntil(db, store, ready, 'restoring', o.timeout);
    const took = ((Date.now() - started) / 1000).toFixed(1);
    process.stdout.write(
      ok
        ? `cluster/${name} restored and healthy in ${took} s (primary ${store.getCluster(name)?.primary})\n`
        : `cluster/${name}: not healthy yet after ${took} s (see pgop get events --cluster ${name})\n`,
    );
    return ok ? EXIT.ok : EXIT.transient;
  } finally {
    store.close();
  }
}
