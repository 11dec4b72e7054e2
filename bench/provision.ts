// bench:provision (root) — the libvirt provider's times on this machine:
//   1. `pgop image build`: cold (empty package cache), warm (cached .debs and debootstrap system,
//      --force), and an unchanged recipe (skipped);
//   2. apply of the 3-node seed spec (specs/libvirt-3node.yaml, resized as in the e2e test) ->
//      3 healthy VMs behind pgpool, with `pgop serve` running;
//   3. `virsh destroy` of the primary's domain -> the first successful write through pgpool
//      (a writer tries every 200 ms), and -> the old primary streaming again as a standby.
// One trial (a bring-up is minutes under TCG). A private libvirtd in its own network namespace
// (scripts/libvirtd-test.sh); the cluster part re-runs this file inside that namespace.
// Everything made is removed afterwards. BENCH_COLD=0 skips the cold build (no download).

import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const IN_NETNS = process.argv.includes('--in-netns');

interface ClusterResult {
  applyToHealthyS: number;
  destroyToWriteS: number;
  writeAttempts: number;
  destroyToRejoinS: number;
  primary: string;
  newPrimary: string;
}

if (process.getuid?.() !== 0) {
  console.log('bench:provision needs root (loop devices, network namespaces, libvirtd); skipped');
  process.exit(0);
}

if (IN_NETNS) await clusterPart();
else await main();

async function main() {
  const { buildImage } = await import('../src/image/build.js');
  const { resolveBuildOptions } = await import('../src/image/recipe.js');
  const { parseAssignments } = await import('../test/libvirt/e2e-helpers/cluster.js');
  const repo = fileURLToPath(new URL('../../', import.meta.url));
  const run = `/var/lib/pgop/bench-provision-${process.pid.toString(36)}`;
  mkdirSync(run, { recursive: true, mode: 0o755 });
  const lines: string[] = [];
  const out = (label: string, value: string) => lines.push(`  ${label.padEnd(52)} ${value}`);
  const libvirtdDir = join(run, 'libvirtd');
  let libvirtdStarted = false;
  try {
    const image = join(run, 'image.qcow2');
    // cold: an empty cache; warm: the cache the cold build filled (or the machine's default one)
    const cold = process.env.BENCH_COLD !== '0';
    const cacheDir = cold ? join(run, 'cache') : undefined;
    const opts = (force: boolean) =>
      resolveBuildOptions({ output: image, ...(cacheDir ? { cacheDir } : {}), force });
    if (cold) {
      process.stderr.write('bench:provision: image build, cold (downloads every package)\n');
      const r = await buildImage(opts(true));
      out('image build, cold (empty package cache)', `${r.seconds.toFixed(1)} s`);
    }
    process.stderr.write('bench:provision: image build, warm\n');
    const warm = await buildImage(opts(true));
    out(
      `image build, warm (cached packages${cold ? ' + debootstrap system' : ''}, --force)`,
      `${warm.seconds.toFixed(1)} s  ${Object.entries(warm.phases)
        .map(([k, v]) => `${k} ${v.toFixed(1)}`)
        .join(', ')}`,
    );
    const again = await buildImage(opts(false));
    out('image build, unchanged recipe', `${again.status} in ${again.seconds.toFixed(2)} s`);
    out(
      'image size',
      `${(warm.fileBytes / 2 ** 20).toFixed(0)} MiB qcow2 (virtual ${opts(false).sizeGiB} GiB)`,
    );

    const start = execFileSync('bash', [join(repo, 'scripts/libvirtd-test.sh'), 'start', libvirtdDir], {
      encoding: 'utf8',
    });
    libvirtdStarted = true;
    const env = parseAssignments(start);
    const resultFile = join(run, 'cluster.json');
    process.stderr.write(`bench:provision: cluster in namespace ${env.LIBVIRTD_NETNS}\n`);
    const code = await new Promise<number>((resolve) => {
      const child = spawn(
        'nsenter',
        [
          `--net=/run/netns/${env.LIBVIRTD_NETNS}`,
          '--',
          process.execPath,
          fileURLToPath(import.meta.url),
          '--in-netns',
        ],
        {
          stdio: 'inherit',
          env: {
            ...process.env,
            ...env,
            PGOP_BENCH_IMAGE: image,
            PGOP_BENCH_WORK: join(run, 'cluster'),
            PGOP_BENCH_RESULT: resultFile,
          },
        },
      );
      const fwd = (sig: NodeJS.Signals) => () => child.kill(sig);
      process.once('SIGINT', fwd('SIGINT'));
      process.once('SIGTERM', fwd('SIGTERM'));
      child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0)));
    });
    if (code !== 0) throw new Error(`the cluster part failed (exit ${code})`);
    const r = JSON.parse(readFileSync(resultFile, 'utf8')) as ClusterResult;
    out('apply -> 3 healthy VMs + pgpool (pgop serve)', `${r.applyToHealthyS.toFixed(1)} s`);
    out(
      `virsh destroy primary (${r.primary}) -> first write via pgpool`,
      `${r.destroyToWriteS.toFixed(1)} s  ` +
        `(new primary ${r.newPrimary}, ${r.writeAttempts} attempts every 200 ms)`,
    );
    out(`virsh destroy -> ${r.primary} streaming again as a standby`, `${r.destroyToRejoinS.toFixed(1)} s`);
    console.log(
      `bench:provision  libvirt provider, qemu TCG, ` +
        `${execFileSync('nproc', { encoding: 'utf8' }).trim()} cores (shared), 1 trial`,
    );
    for (const l of lines) console.log(l);
  } catch (e) {
    for (const l of lines) console.log(l);
    throw e;
  } finally {
    if (libvirtdStarted) {
      try {
        execFileSync('bash', [join(repo, 'scripts/libvirtd-test.sh'), 'stop', libvirtdDir], {
          stdio: 'inherit',
        });
      } catch {
        /* reported by the script */
      }
    }
    rmSync(run, { recursive: true, force: true });
  }
}

async function clusterPart() {
  const h = await import('../test/libvirt/e2e-helpers/cluster.js');
  const lv = h.libvirtdFromEnv();
  if (!lv) throw new Error('bench:provision --in-netns: no libvirtd in the environment');
  const work = process.env.PGOP_BENCH_WORK!;
  mkdirSync(work, { recursive: true, mode: 0o755 });
  const secrets = h.ensureSecrets();
  const spec = h.e2eSpec({
    uri: lv.qemuUri,
    baseImage: process.env.PGOP_BENCH_IMAGE!,
    poolPath: join(work, 'pool'),
    subnet: 100 + Math.floor(Math.random() * 150),
  });
  writeFileSync(join(work, 'spec.yaml'), spec.yaml);
  const pgop = new h.Pgop(join(work, 'pgop.db'), {
    ...process.env,
    PGOP_LIBVIRT_STATE: join(work, 'libvirt-state'),
  });
  const serveLog = join(work, 'serve.log');
  const log = (s: string) => process.stderr.write(`bench:provision: ${s}\n`);
  const viaPgpool = {
    host: spec.pgpool.address,
    port: spec.pgpool.port,
    password: secrets.PGOP_SUPERUSER_PASSWORD,
    database: 'critlib',
  };
  const describe = async () => h.describeNodes(await pgop.nodes());
  let deleted = false;
  try {
    const t0 = performance.now();
    const applied = await pgop.runAsync(['apply', '-f', join(work, 'spec.yaml')]);
    if (applied.code !== 0) throw new Error(`apply failed: ${applied.stderr}`);
    pgop.startServe(serveLog);
    const c = await h.waitFor(
      '3 healthy nodes',
      async () => {
        if (!pgop.serveAlive()) throw new Error('pgop serve exited');
        const [cl, items] = [await pgop.cluster(spec.name), await pgop.nodes()];
        return cl && h.healthy(cl, items, 3) ? cl : undefined;
      },
      { timeoutMs: 20 * 60_000, intervalMs: 1000, log, describe },
    );
    const applyToHealthyS = (performance.now() - t0) / 1000;
    log(`healthy after ${applyToHealthyS.toFixed(1)} s`);
    const primary = c.primary!;
    await h.sql(
      viaPgpool,
      'CREATE TABLE IF NOT EXISTS bench_writes (id serial PRIMARY KEY, at timestamptz DEFAULT now())',
    );
    await h.sql(viaPgpool, 'INSERT INTO bench_writes DEFAULT VALUES');
    const t1 = performance.now();
    await h.virsh(lv.qemuUri, 'destroy', `${spec.name}-${primary}`);
    let writeAttempts = 0;
    await h.waitFor(
      'a write through pgpool',
      async () => {
        writeAttempts++;
        await h.sql(viaPgpool, 'INSERT INTO bench_writes DEFAULT VALUES', [], 2000);
        return true;
      },
      { timeoutMs: 10 * 60_000, intervalMs: 200, log, describe },
    );
    const destroyToWriteS = (performance.now() - t1) / 1000;
    log(`first write after ${destroyToWriteS.toFixed(1)} s`);
    const after = await h.waitFor(
      `${primary} back as a standby`,
      async () => {
        const [cl, items] = [await pgop.cluster(spec.name), await pgop.nodes()];
        const old = items.find((n) => n.name === primary);
        return cl &&
          cl.primary !== primary &&
          old?.role === 'standby' &&
          old.streaming &&
          h.healthy(cl, items, 3)
          ? cl
          : undefined;
      },
      { timeoutMs: 15 * 60_000, intervalMs: 1000, log, describe },
    );
    const destroyToRejoinS = (performance.now() - t1) / 1000;
    const result: ClusterResult = {
      applyToHealthyS,
      destroyToWriteS,
      writeAttempts,
      destroyToRejoinS,
      primary,
      newPrimary: after.primary!,
    };
    writeFileSync(process.env.PGOP_BENCH_RESULT!, JSON.stringify(result));
    const del = await pgop.runAsync(['delete', 'cluster', spec.name], 600_000);
    if (del.code !== 0) throw new Error(`delete failed: ${del.stderr.slice(-1000)}`);
    deleted = true;
  } finally {
    if (!deleted) {
      if (!pgop.serveAlive()) pgop.startServe(serveLog);
      await pgop.runAsync(['delete', 'cluster', spec.name], 600_000).catch(() => undefined);
    }
    await pgop.stopServe();
  }
}
