// `pgop lab up|down|fault` and `pgop psql`: the one-machine lab as a newcomer meets it.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hostname } from 'node:os';
import { Store, processIsAlive } from '../../store/store.js';
import { parseSpecFile } from '../../spec/parse.js';
import { resolveSecret } from '../../spec/secrets.js';
import { defaultTlsDir, tlsOf } from '../../tls/material.js';
import { EXIT, terminal } from '../../errors.js';
import { makeDirs } from '../../state-dirs.js';
import { userLocaleEnv } from '../child-locale.js';
import { NotFoundError, UsageError } from '../errors.js';
import { LAB_FAULTS, type LabFault } from '../vocabulary.js';
import { poolHosts, type BackupSpec, type ClusterSpec, type SecretRef } from '../../spec/types.js';
import type { MachineRef } from '../../drivers/types.js';
import type { StoredCluster } from '../../store/types.js';

const BIN = fileURLToPath(new URL('../../../../bin/pgop', import.meta.url));
export const DEFAULT_LAB_SPEC = fileURLToPath(new URL('../../../../specs/lab-3node.yaml', import.meta.url));

const operatorFiles = (db: string) => ({
  pid: join(dirname(db), 'serve.pid'),
  log: join(dirname(db), 'serve.log'),
});

function requireRoot(what: string) {
  if (process.getuid?.() !== 0)
    throw terminal(`cannot ${what}: the lab needs root (network namespaces, sshd, postgres as its own user)`);
}

/** Secret files a lab spec references are made on first use: random, 0600, never printed. */
export function ensureSecretFiles(spec: ClusterSpec): string[] {
  const refs: SecretRef[] = [
    spec.postgres.superuserPassword,
    spec.replication.password,
    ...spec.roles.flatMap((r) => (r.password ? [r.password] : [])),
    ...(spec.backup?.encryption ? [spec.backup.encryption.passphrase] : []),
  ];
  const made: string[] = [];
  for (const ref of refs) {
    if (!('file' in ref) || existsSync(ref.file)) continue;
    makeDirs(dirname(ref.file), 0o700);
    writeFileSync(ref.file, `${randomBytes(18).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
    made.push(ref.file);
  }
  for (const ref of refs) resolveSecret(ref, 'a secret the lab spec references'); // env refs must be set
  return made;
}

function missingBinaries(spec: ClusterSpec): string[] {
  const need = [
    `/usr/lib/postgresql/${spec.postgres.version}/bin/postgres`,
    '/usr/sbin/sshd',
    '/usr/bin/ssh-keygen',
    '/usr/sbin/pgpool',
    '/usr/bin/unshare',
    ...(spec.backup ? ['/usr/bin/pgbackrest'] : []),
  ];
  return need.filter((p) => !existsSync(p));
}

function serveHolder(store: Store): number | null {
  const probe = store.acquireServeLock(process.pid, hostname(), Date.now(), processIsAlive);
  if (probe.ok) {
    store.releaseServeLock(process.pid);
    return null;
  }
  return probe.pid;
}

async function startOperator(db: string): Promise<number> {
  const { ensureHub, inNetnsArgv } = await import('../../drivers/lab/netns.js');
  const hub = await ensureHub();
  const files = operatorFiles(db);
  const out = openSync(files.log, 'a', 0o600);
  // nsenter execs node in place: the pid we record is the operator's own.
  const [enter, ...enterArgs] = inNetnsArgv(hub);
  // its HTTP socket is bound here, so the dashboard is reachable from the host, not only the hub
  const { resolveListen } = await import('../../server/listen.js');
  const { handOverListener } = await import('../../server/serve-http.js');
  const http = await handOverListener(resolveListen({})!);
  const child = spawn(enter!, [...enterArgs, process.execPath, BIN, '--db', db, 'serve'], {
    detached: true,
    stdio: ['ignore', out, out, ...(http?.fds ?? [])],
    env: { ...process.env, PGOP_IN_HUB: process.env.PGOP_LAB_PREFIX ?? 'pgop' },
  });
  http?.spawned();
  closeSync(out);
  child.unref();
  writeFileSync(files.pid, `${child.pid}\n`);
  return child.pid!;
}

async function waitConverged(
  store: Store,
  name: string,
  timeoutMs: number,
  operatorPid: number,
  log: string,
): Promise<StoredCluster> {
  const deadline = Date.now() + timeoutMs;
  let lastEvent = store.listEvents({ cluster: name, limit: 1 })[0]?.id ?? 0;
  for (;;) {
    for (const e of store.listEvents({ cluster: name, afterId: lastEvent })) {
      lastEvent = e.id;
      const t = e.from || e.to ? `${e.node} ${e.from} -> ${e.to}` : (e.node ?? 'cluster');
      process.stdout.write(`  ${new Date(e.time).toISOString().slice(11, 23)}  ${t}: ${e.reason}\n`);
    }
    const c = store.getCluster(name);
    if (c && c.observedGeneration === c.generation && c.phase === 'Healthy') return c;
    if (!processIsAlive(operatorPid))
      throw terminal(`cannot bring up cluster ${name}: the operator (pid ${operatorPid}) exited; see ${log}`);
    if (Date.now() > deadline) throw PgopTimeout(name, c, log);
    await new Promise((r) => setTimeout(r, 300));
  }
}

const PgopTimeout = (name: string, c: StoredCluster | undefined, log: string) =>
  terminal(
    `cannot bring up cluster ${name} in time: phase ${c?.phase ?? '?'}: ${c?.message ?? ''} ` +
      `(the operator keeps trying; see pgop get events --cluster ${name} and ${log})`,
  );

export async function labUpCommand(db: string, file: string, timeoutMs: number): Promise<number> {
  requireRoot('bring the lab up');
  const parsed = parseSpecFile(file);
  const spec = parsed.spec;
  if (spec.provider.type !== 'lab')
    throw terminal(
      `cannot bring up ${file} with pgop lab up: ` +
        `its provider is ${spec.provider.type}, not lab (use pgop apply)`,
    );
  const missing = missingBinaries(spec);
  if (missing.length)
    throw terminal(
      `cannot bring the lab up: missing ${missing.join(', ')} (run scripts/bootstrap.sh as root)`,
    );
  for (const f of ensureSecretFiles(spec)) process.stdout.write(`generated secret ${f} (0600)\n`);

  const store = Store.open(db);
  try {
    const { result, generation } = store.applySpec(spec, parsed.hash, parsed.source, Date.now());
    process.stdout.write(
      `cluster/${spec.name} ${result}${result === 'unchanged' ? '' : ` (generation ${generation})`}\n`,
    );
    const files = operatorFiles(db);
    let pid = serveHolder(store);
    if (pid === null) {
      pid = await startOperator(db);
      process.stdout.write(`operator started: pid ${pid}, log ${files.log}\n`);
    } else {
      process.stdout.write(`operator already running: pid ${pid}\n`);
    }
    const started = Date.now();
    const c = await waitConverged(store, spec.name, timeoutMs, pid, files.log);
    process.stdout.write(
      `\ncluster ${spec.name} healthy in ${((Date.now() - started) / 1000).toFixed(1)} s\n\n`,
    );
    const { getCommand } = await import('./get.js');
    await getCommand(db, 'nodes', [], { cluster: spec.name, output: 'table' });
    const endpoint =
      spec.pgpool.enabled && spec.pgpool.address
        ? `${spec.pgpool.address}:${spec.pgpool.port}`
        : `primary ${c.primary}`;
    // How this pgop was invoked (./bin/pgop from a checkout, pgop when installed).
    const me =
      process.argv[1] && relative(process.cwd(), process.argv[1]) === 'bin/pgop' ? './bin/pgop' : 'pgop';
    const n = spec.name;
    const tips: [string, string][] = [
      [`${me} psql ${n}`, 'psql through pgpool (--node NODE for one node)'],
      [`${me} get nodes -w`, 'watch roles, timelines, LSNs and lag'],
      [`${me} lab fault ${c.primary ?? 'pg01'} kill`, "kill -9 the primary's postmaster; watch the failover"],
      [`${me} lab fault NODE partition|heal`, "take a node's link down / up again"],
      [`${me} lab fault NODE stop|start`, 'stop / start a whole node'],
      [`${me} lab fault NODE hang|resume`, "SIGSTOP / SIGCONT a node's postgres (ports open, no answers)"],
      ...(poolHosts(spec).length > 1 && spec.pgpool.onNodes
        ? [
            [`${me} lab fault NODE kill-pgpool`, "kill the virtual IP holder's pgpool; watch it move"] as [
              string,
              string,
            ],
          ]
        : []),
      ...(poolHosts(spec).length > 1 && !spec.pgpool.onNodes
        ? [
            [
              `${me} lab fault POOLHOST kill-pgpool|stop|partition`,
              'fail the virtual IP holder; watch it move',
            ] as [string, string],
          ]
        : []),
      [`${me} switchover ${n} [--to NODE]`, 'planned handover'],
      [`${me} get events --cluster ${n}`, 'the story, each step with its reason'],
      [`${me} lab down`, 'stop the operator and remove the lab'],
    ];
    const width = Math.max(...tips.map(([cmd]) => cmd.length)) + 3;
    process.stdout.write(
      `\nClients connect through pgpool at ${endpoint} (inside the lab's namespaces only).\n`,
    );
    for (const [cmd, what] of tips) process.stdout.write(`  ${cmd.padEnd(width)}${what}\n`);
    process.stdout.write(`Operator: pid ${pid}, log ${files.log}, store ${db}\n`);
    return EXIT.ok;
  } finally {
    store.close();
  }
}

/** The lab is a demo: taking it down takes its WAL and backups too (the stanza's directories;
 *  the repository directory when nothing else is left in it). A cluster made again under the
 *  same name would otherwise find a stanza of another database system there. Outside the lab, a
 *  deleted cluster's repository stays. */
function removeLabStanza(name: string, b: BackupSpec): void {
  for (const part of ['archive', 'backup'])
    rmSync(join(b.repo.path, part, name), { recursive: true, force: true });
  for (const dir of [join(b.repo.path, 'archive'), join(b.repo.path, 'backup'), b.repo.path]) {
    try {
      if (readdirSync(dir).length === 0) rmdirSync(dir);
    } catch {
      /* gone already, or not empty */
    }
  }
  process.stdout.write(`backup repository ${b.repo.path}: stanza ${name} removed\n`);
}

export async function labDownCommand(db: string, file: string | undefined): Promise<number> {
  requireRoot('take the lab down');
  const store = Store.open(db);
  let names: string[];
  const backups = new Map<string, BackupSpec>();
  try {
    names = file
      ? [parseSpecFile(file).spec.name]
      : store
          .listClusters()
          .filter((c) => c.spec.provider.type === 'lab')
          .map((c) => c.name);
    names = names.filter((n) => store.getCluster(n));
    for (const n of names) {
      const b = store.getCluster(n)?.spec.backup;
      if (b) backups.set(n, b);
    }
  } finally {
    store.close();
  }
  for (const name of names) {
    const code = await deleteInHub(db, name);
    if (code !== EXIT.ok) return code;
    const b = backups.get(name);
    if (b) removeLabStanza(name, b);
  }
  // Stop the operator we started (by the PID we recorded, and only if it holds this store).
  const files = operatorFiles(db);
  if (existsSync(files.pid)) {
    const pid = Number(readFileSync(files.pid, 'utf8').trim());
    const again = Store.open(db);
    const holder = serveHolder(again);
    again.close();
    if (pid > 0 && holder === pid && processIsAlive(pid)) await stopOperator(pid);
  }
  const { hubNs, netnsExists, netnsPids, listLinks, deleteNetns, labPrefix, sweepLab } =
    await import('../../drivers/lab/netns.js');
  if (!file || !(await anyLabCluster(db))) {
    // The whole lab is down: whatever an earlier run or a crash left of it goes too (by name:
    // <prefix>-*, its processes ended by PID). Run again, it finds nothing.
    const left = await sweepLab(labPrefix());
    for (const ns of left) process.stdout.write(`namespace ${ns} removed\n`);
    if (!names.length && !left.length) process.stdout.write('nothing of the lab is left\n');
    return EXIT.ok;
  }
  // The hub outlives clusters while a process (the operator) lives in it; now it may go too.
  const hub = hubNs();
  if (netnsExists(hub) && netnsPids(hub).length === 0 && (await listLinks(hub, 'bridge')).length === 0) {
    await deleteNetns(hub);
    process.stdout.write(`namespace ${hub} removed\n`);
  }
  return EXIT.ok;
}

/** `pgop delete cluster NAME` as a child (it runs in the hub namespace): this process stays out
 *  of the hub, so that it can remove the hub afterwards. */
async function deleteInHub(db: string, name: string): Promise<number> {
  const { spawn } = await import('node:child_process');
  const argv = [...process.execArgv, process.argv[1]!, '--db', db, 'delete', 'cluster', name];
  const child = spawn(process.execPath, argv, { stdio: 'inherit' });
  return new Promise((resolve) => child.on('exit', (code) => resolve(code ?? EXIT.internal)));
}

/** SIGTERM (serve exits within 2 s), then SIGKILL after 15 s: it is the operator `lab up` started. */
async function stopOperator(pid: number): Promise<void> {
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 15_000;
  while (processIsAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (processIsAlive(pid)) {
    process.kill(pid, 'SIGKILL');
    process.stdout.write(`operator pid ${pid} did not stop within 15 s: killed\n`);
  } else process.stdout.write(`operator pid ${pid} stopped\n`);
}

async function anyLabCluster(db: string): Promise<boolean> {
  const store = Store.open(db, { readonly: true });
  try {
    return store.listClusters().some((c) => c.spec.provider.type === 'lab');
  } finally {
    store.close();
  }
}

async function labCluster(db: string, name: string | undefined): Promise<ClusterSpec> {
  const store = Store.open(db, { readonly: true });
  try {
    const labs = store
      .listClusters()
      .filter((c) => c.spec.provider.type === 'lab' && (!name || c.name === name));
    if (labs.length === 0)
      throw new NotFoundError(`cannot find ${name ? `lab cluster ${name}` : 'a lab cluster'} in ${db}`);
    if (labs.length > 1)
      throw new UsageError(`several lab clusters (${labs.map((c) => c.name).join(', ')}): pass --cluster`);
    return labs[0]!.spec;
  } finally {
    store.close();
  }
}

export async function labFaultCommand(
  db: string,
  nodeName: string,
  action: string,
  clusterName: string | undefined,
): Promise<number> {
  requireRoot('inject a fault');
  if (!(LAB_FAULTS as readonly string[]).includes(action))
    throw new UsageError(`cannot inject fault ${action}: use one of ${LAB_FAULTS.join(', ')}`);
  const spec = await labCluster(db, clusterName);
  const runsPgpool = poolHosts(spec).some((h) => h.name === nodeName);
  const dbNode = spec.nodes.find((n) => n.name === nodeName);
  // a pool host of its own is named by a string; a node (pgpool on it or not) by its spec
  const node: MachineRef | undefined = dbNode ?? (runsPgpool ? nodeName : undefined);
  if (!node) {
    const known = [...new Set([...spec.nodes.map((n) => n.name), ...poolHosts(spec).map((h) => h.name)])];
    throw new NotFoundError(
      `cannot inject a fault into ${nodeName}: no such node or pool host in cluster ${spec.name} ` +
        `(${known.join(', ')})`,
    );
  }
  if (action === 'kill-pgpool' && !runsPgpool)
    throw new UsageError(`cannot inject fault kill-pgpool into ${nodeName}: pgpool runs on the pool hosts`);
  if ((action === 'hang' || action === 'resume') && !dbNode)
    throw new UsageError(`cannot inject fault ${action} into ${nodeName}: it is a pool host (no postgres)`);
  const { createLabProvider } = await import('../../drivers/lab/provider.js');
  const provider = createLabProvider();
  const t = Date.now();
  try {
    // on a pool host of its own, kill is kill-pgpool: pgpool is what runs there
    if (action === 'kill-pgpool') await provider.killPgpoolOf(spec, node);
    else await provider[action as Exclude<LabFault, 'kill-pgpool'>](spec, node);
  } finally {
    await provider.close();
  }
  process.stdout.write(`${spec.name}/${nodeName}: ${action} done at ${new Date(t).toISOString()}\n`);
  return EXIT.ok;
}

export async function psqlCommand(
  db: string,
  clusterName: string,
  nodeName: string | undefined,
  args: string[],
): Promise<number> {
  const store = Store.open(db, { readonly: true });
  let spec: ClusterSpec;
  try {
    const c = store.getCluster(clusterName);
    if (!c) throw new NotFoundError(`cannot connect to cluster ${clusterName}: no such cluster`);
    spec = c.spec;
  } finally {
    store.close();
  }
  if (spec.provider.type === 'sim')
    throw terminal(`cannot connect to cluster ${clusterName}: it is simulated`);
  const node = nodeName ? spec.nodes.find((n) => n.name === nodeName) : undefined;
  if (nodeName && !node)
    throw new NotFoundError(`cannot connect to ${clusterName}/${nodeName}: no such node`);
  const [host, port] = node
    ? [node.address, 5432]
    : spec.pgpool.enabled && spec.pgpool.address
      ? [spec.pgpool.address, spec.pgpool.port]
      : [null, 0];
  if (!host) throw new UsageError(`cannot connect to cluster ${clusterName}: it has no pgpool; pass --node`);
  // The password goes through the environment: never on a command line (ps shows those).
  const env: NodeJS.ProcessEnv = {
    ...userLocaleEnv(),
    PGPASSWORD: resolveSecret(spec.postgres.superuserPassword, 'the postgres superuser password'),
    PGCONNECT_TIMEOUT: '5',
  };
  // verify-full against the cluster CA (network clients are taken over TLS only)
  if (tlsOf(spec).enabled)
    Object.assign(env, { PGSSLMODE: 'verify-full', PGSSLROOTCERT: join(defaultTlsDir(spec), 'ca.crt') });
  const psql = existsSync(`/usr/lib/postgresql/${spec.postgres.version}/bin/psql`)
    ? `/usr/lib/postgresql/${spec.postgres.version}/bin/psql`
    : 'psql';
  const argv = [
    psql,
    `host=${host} port=${port} user=postgres dbname=postgres application_name=pgop-psql`,
    ...args,
  ];
  let cmd = argv[0]!;
  let cmdArgs = argv.slice(1);
  if (spec.provider.type === 'lab') {
    requireRoot('connect to a lab cluster');
    const { ensureHub, inHub, inNetnsArgv } = await import('../../drivers/lab/netns.js');
    if (!inHub()) {
      const [enter, ...enterArgs] = inNetnsArgv(await ensureHub());
      cmd = enter!;
      cmdArgs = [...enterArgs, ...argv];
    }
  }
  const child = spawn(cmd, cmdArgs, { stdio: 'inherit', env });
  return new Promise((resolve) => child.on('exit', (code) => resolve(code ?? EXIT.internal)));
}
