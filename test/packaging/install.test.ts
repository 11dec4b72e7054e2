// `npm pack`, then `npm install -g` of the tarball into a fresh prefix, as a user installs pgop:
// the installed `pgop` must run from what the package ships (dist, schema with its migrations,
// specs, the image files, bin), built by `prepack` from a checkout that has no dist/.
// Sim and lab users need no native libvirt binding: it is an optional dependency, which npm
// drops where it does not build (no libvirt-dev). `--omit=optional` would say so directly but
// is ignored by `npm install -g` of a tarball (npm/cli#8284), so the test removes the binding
// after the install and checks that pgop still works.
// Needs the npm registry (dependencies are fetched as for any user).

import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('../../', import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), 'pgop-pack-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The checkout without dist/ (prepack must build it) and with its dependencies linked. */
function cleanCheckout(): string {
  const dir = join(work, 'checkout');
  cpSync(root, dir, { recursive: true, filter: (src) => !/\/(node_modules|dist|\.git)$/.test(src) });
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

/**
 * better-sqlite3 compiles its addon when no prebuilt binary can be downloaded (none can here):
 * minutes on this 2-core host. The addon this checkout already built is offered the way
 * prebuild-install takes local prebuilds, for the same version only; any other compiles.
 */
function localPrebuilds(): NodeJS.ProcessEnv {
  const mod = join(root, 'node_modules/better-sqlite3');
  const version = (JSON.parse(readFileSync(join(mod, 'package.json'), 'utf8')) as { version: string })
    .version;
  if (!existsSync(join(mod, 'build/Release/better_sqlite3.node'))) return {};
  const dir = join(work, 'prebuilds');
  mkdirSync(dir);
  const target = `node-v${process.versions.modules}-${process.platform}-${process.arch}`;
  const name = `better-sqlite3-v${version}-${target}.tar.gz`;
  execFileSync('tar', ['-czf', join(dir, name), '-C', mod, 'build/Release/better_sqlite3.node']);
  return { npm_config_better_sqlite3_local_prebuilds: dir };
}

const registryReachable = spawnSync('npm', ['ping'], { timeout: 20_000 }).status === 0;

describe('npm pack + npm install -g', () => {
  it.skipIf(!registryReachable)(
    'gives a working pgop in a fresh prefix (skipped without the npm registry)',
    () => {
      const checkout = cleanCheckout();
      const npmEnv = {
        ...process.env,
        npm_config_audit: 'false',
        npm_config_fund: 'false',
        npm_config_update_notifier: 'false',
      };
      const pack = spawnSync('npm', ['pack', '--silent', '--pack-destination', work], {
        cwd: checkout,
        env: npmEnv,
        encoding: 'utf8',
      });
      expect(pack.status, pack.stderr).toBe(0);
      const tarball = readdirSync(work).find((f) => /^pgop-.*\.tgz$/.test(f));
      expect(tarball).toBeDefined();

      const fresh = join(work, 'fresh');
      const prefix = join(work, 'prefix');
      mkdirSync(fresh);
      const install = spawnSync(
        'npm',
        ['install', '-g', '--prefix', prefix, '--prefer-offline', join(work, tarball!)],
        {
          cwd: fresh,
          env: { ...npmEnv, ...localPrebuilds() },
          encoding: 'utf8',
        },
      );
      expect(install.status, install.stderr).toBe(0);

      const pkgDir = join(prefix, 'lib/node_modules/pgop');
      rmSync(join(pkgDir, 'node_modules/@unraid/libvirt'), { recursive: true, force: true });
      const pgop = (...args: string[]) =>
        spawnSync(join(prefix, 'bin/pgop'), ['--db', join(work, 'pgop.db'), ...args], {
          cwd: fresh,
          encoding: 'utf8',
          env: { ...process.env, PGOP_DB: '' },
        });
      const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string })
        .version;
      expect(pgop('--version')).toMatchObject({ status: 0, stdout: `${version}\n` });
      const spec = join(pkgDir, 'specs/sim-3node.yaml');
      expect(pgop('apply', '--dry-run', '-f', spec)).toMatchObject({
        status: 0,
        stdout: 'cluster/sim created (dry run)\n',
      });
      // the store's migrations, the planner and the machines, from the installed files
      expect(pgop('apply', '-f', spec).status).toBe(0);
      const serve = pgop('serve', '--until-converged', '--timeout', '60s');
      expect(serve.status, serve.stderr).toBe(0);
      expect(pgop('get', 'clusters').stdout).toMatch(/^sim\s+1\s+Healthy/m);
      // the libvirt driver still loads without its optional binding (it is needed only to connect)
      const load = spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `await import(${JSON.stringify(join(pkgDir, 'dist/src/drivers/libvirt/world.js'))})`,
        ],
        { encoding: 'utf8' },
      );
      expect(load.status, load.stderr).toBe(0);
    },
    240_000,
  );
});
