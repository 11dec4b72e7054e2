// `pgop`: argument parsing and the ONE top-level catch that maps error kinds to exit codes.
// Each command's module is imported only when that command runs, so `pgop get` never loads
// the YAML parser, the schema validator, xstate or the drivers.

import { readFileSync } from 'node:fs';
import { Argument, Command, Option } from 'commander';
import { EXIT, PgopError, SpecError, exitCodeFor, messageOf } from '../errors.js';
import type { ImageBuildFlags } from '../image/recipe.js';
import type { BackupType } from '../spec/types.js';
import type { ListenFlags } from '../server/listen.js';
import { parseDuration } from './duration.js';
import { cliExitCode } from './errors.js';
import { pinChildLocale } from './child-locale.js';
import { KINDS, LAB_FAULTS } from './vocabulary.js';

export interface GlobalOptions {
  db: string;
}

/** The version in the package.json beside dist/ (or beside src/ when run from the checkout). */
function packageVersion(): string {
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'pgop' && pkg.version) return pkg.version;
    } catch {
      // not this one
    }
  }
  return 'unknown';
}

const program = new Command();
program
  .name('pgop')
  .description('Kubernetes-free operator for highly-available PostgreSQL on libvirt hypervisors')
  .version(packageVersion(), '--version', 'print the version and exit')
  .option(
    '--db <path>',
    'state database (env PGOP_DB; default /var/lib/pgop/pgop.db as root, else ~/.local/state/pgop/pgop.db)',
  )
  .showHelpAfterError()
  .exitOverride();

async function dbPath(): Promise<string> {
  const opt = program.opts<{ db?: string }>().db;
  if (opt) return opt;
  const { defaultDbPath } = await import('../store/store.js');
  return defaultDbPath();
}

program
  .command('apply')
  .description('store a desired-state spec (prints cluster/NAME created|configured|unchanged)')
  .requiredOption('-f, --file <file>', 'spec file (YAML; - reads standard input)')
  .option('--dry-run', 'validate and report what would happen; write nothing')
  .action(async (o: { file: string; dryRun?: boolean }) => {
    const { applyCommand } = await import('./commands/apply.js');
    process.exitCode = await applyCommand(await dbPath(), o.file, !!o.dryRun);
  });

program
  .command('diff')
  .description('show what applying FILE would change (exit 0: nothing, 1: changes)')
  .requiredOption('-f, --file <file>', 'spec file (YAML; - reads standard input)')
  .action(async (o: { file: string }) => {
    const { diffCommand } = await import('./commands/apply.js');
    process.exitCode = await diffCommand(await dbPath(), o.file);
  });

type GetFlags = {
  cluster?: string;
  output: 'table' | 'wide' | 'json' | 'yaml';
  watch?: boolean;
  allIncarnations?: boolean;
};

program
  .command('get')
  .description('list clusters, nodes or events')
  .addArgument(new Argument('<kind>', 'what to list').choices(KINDS.get))
  .argument('[names...]', 'only these clusters or nodes')
  .option('--cluster <name>', 'only this cluster')
  .addOption(
    new Option('-o, --output <format>', 'output format')
      .choices(['table', 'wide', 'json', 'yaml'])
      .default('table'),
  )
  .option('-w, --watch', 'keep printing what changes (-o json: one object per line)')
  .option(
    '--all-incarnations',
    'events: also those of earlier clusters of that name (deleted, then created again)',
  )
  .action(async (kind: string, names: string[], o: GetFlags) => {
    const { getCommand } = await import('./commands/get.js');
    process.exitCode = await getCommand(await dbPath(), kind, names, o);
  });

program
  .command('describe')
  .description('everything pgop knows about one cluster or node')
  .addArgument(new Argument('<kind>', 'what to describe').choices(KINDS.describe))
  .argument('<name>', 'cluster name, or node name (with --cluster when ambiguous)')
  .option('--cluster <name>', "the node's cluster")
  .action(async (kind: string, name: string, o: { cluster?: string }) => {
    const { describeCommand } = await import('./commands/get.js');
    process.exitCode = await describeCommand(await dbPath(), kind, name, o.cluster);
  });

program
  .command('delete')
  .description('tear a cluster down (the running `pgop serve` does it) and forget it')
  .addArgument(new Argument('<kind>', 'what to delete').choices(KINDS.delete))
  .argument('<name>')
  .option('--no-wait', 'only request the deletion; do not wait for the teardown')
  .option(
    '--timeout <duration>',
    'give up waiting after this long (90, 90s, 5m, 1h)',
    parseDuration,
    10 * 60_000,
  )
  .action(async (kind: string, name: string, o: { wait: boolean; timeout: number }) => {
    const { deleteCommand } = await import('./commands/apply.js');
    process.exitCode = await deleteCommand(await dbPath(), kind, name, o.wait, o.timeout);
  });

program
  .command('switchover')
  .description('planned handover of the primary role, losing no acknowledged write')
  .argument('<cluster>')
  .option('--to <node>', 'the standby to promote (default: the most advanced)')
  .option(
    '--timeout <duration>',
    'give up waiting after this long (90, 90s, 5m, 1h)',
    parseDuration,
    5 * 60_000,
  )
  .action(async (cluster: string, o: { to?: string; timeout: number }) => {
    const { switchoverCommand } = await import('./commands/apply.js');
    process.exitCode = await switchoverCommand(await dbPath(), cluster, o.to, o.timeout);
  });

program
  .command('backup')
  .description('take a backup of a cluster now (a job of the running pgop serve)')
  .argument('<cluster>')
  .addOption(
    new Option('--type <type>', 'full, diff or incr').choices(['full', 'diff', 'incr']).default('full'),
  )
  .option('--no-wait', 'only ask for it')
  .option(
    '--timeout <duration>',
    'give up waiting after this long (90, 90s, 5m, 1h)',
    parseDuration,
    6 * 60 * 60_000,
  )
  .action(async (cluster: string, o: { type: BackupType; wait: boolean; timeout: number }) => {
    const { backupCommand } = await import('./commands/apply.js');
    process.exitCode = await backupCommand(await dbPath(), cluster, o.type, o.wait, o.timeout);
  });

program
  .command('restore')
  .description("build a NEW cluster from another cluster's backups and WAL archive (point in time)")
  .requiredOption('--from <cluster>', 'the cluster whose backups to restore')
  .option('--to-time <time>', 'up to this time, e.g. "2026-12-04 10:15:00.123+00"')
  .option('--to-lsn <lsn>', 'up to this WAL position, e.g. 0/5000060')
  .option('--latest', 'to the end of the archive (every archived transaction)')
  .option('--set <label>', 'start from this backup (default: the newest the target allows)')
  .requiredOption('-f, --file <spec>', "the new cluster's spec (another name; needs spec.backup)")
  .option('--no-wait', 'only store the new cluster')
  .option(
    '--timeout <duration>',
    'give up waiting after this long (90, 90s, 5m, 1h)',
    parseDuration,
    60 * 60_000,
  )
  .action(async (o: import('./commands/restore.js').RestoreFlags) => {
    const { restoreCommand } = await import('./commands/restore.js');
    process.exitCode = await restoreCommand(await dbPath(), o);
  });

program
  .command('serve')
  .description('run the reconcile loop (one per store)')
  .option('--until-converged', 'exit 0 once every cluster matches its spec (1 on timeout)')
  .option('--timeout <duration>', 'give up after this long (90, 90s, 5m, 1h, 500ms)', parseDuration)
  .option(
    '--listen <addr:port>',
    'HTTP API, /metrics and dashboard ' +
      '(default 127.0.0.1:9187; off: none; other than loopback: token and TLS)',
  )
  .option('--token-file <file>', 'bearer token for the API (write endpoints; any non-loopback listen)')
  .option('--tls-cert <file>', 'TLS certificate (PEM) for the listener')
  .option('--tls-key <file>', 'TLS private key (PEM) for the listener')
  .action(async (o: { untilConverged?: boolean; timeout?: number } & ListenFlags) => {
    const { serveCommand } = await import('./commands/serve.js');
    // serveCommand takes seconds; parseDuration gives milliseconds
    const timeout = o.timeout === undefined ? undefined : o.timeout / 1000;
    process.exitCode = await serveCommand(await dbPath(), { ...o, timeout });
    // Stopped: the lock is released and the store closed; sockets abandoned at the stop (a node
    // that no longer answers) must not keep the process alive.
    process.exit();
  });

const hostKey = program
  .command('host-key')
  .description('the SSH host keys pgop made for its machines (pinned before their first boot)');
hostKey
  .command('list')
  .description('pinned host keys, as fingerprints')
  .option('--cluster <name>', 'only this cluster')
  .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
  .action(async (o: { cluster?: string; output: 'table' | 'json' }) => {
    const { hostKeyListCommand } = await import('./commands/host-key.js');
    process.exitCode = await hostKeyListCommand(await dbPath(), o);
  });
hostKey
  .command('rotate')
  .description(
    'give a machine a new host key over its verified session; ' +
      'the pin changes only once the new key answers (root)',
  )
  .argument('<cluster>')
  .argument('<node>', 'node name, or pool for the pgpool host')
  .action(async (cluster: string, node: string) => {
    const { hostKeyRotateCommand } = await import('./commands/host-key.js');
    process.exitCode = await hostKeyRotateCommand(await dbPath(), cluster, node);
  });
hostKey
  .command('forget')
  .description(
    'drop a pin: the next key the machine presents is accepted unverified ' +
      '(for a machine rebuilt outside pgop)',
  )
  .argument('<cluster>')
  .argument('<node>', 'node name, or pool for the pgpool host')
  .action(async (cluster: string, node: string) => {
    const { hostKeyForgetCommand } = await import('./commands/host-key.js');
    process.exitCode = await hostKeyForgetCommand(await dbPath(), cluster, node);
  });

const image = program.command('image').description('base images for the libvirt provider');
image
  .command('build')
  .description(
    'build the offline Debian cloud image (debootstrap; postgres, pgpool, cloud-init inside); ' +
      'skipped when its recipe is unchanged (root)',
  )
  .option('-f, --file <file>', 'libvirt spec: write the image to its provider.baseImage')
  .option(
    '-o, --output <path>',
    "the qcow2 to write (default: the spec's baseImage, else /var/lib/pgop/images/debian-12-pgop.qcow2)",
  )
  .option('--force', 'rebuild even when the recipe is unchanged (from the cached debootstrap system)')
  .option('--fresh', 'rebuild and run debootstrap again (newer package versions)')
  .option(
    '--cache-dir <dir>',
    'downloaded packages and the last debootstrap system (default /var/cache/pgop/image)',
  )
  .option('--mirror <url>', 'Debian mirror (default http://deb.debian.org/debian)')
  .option('--suite <name>', 'Debian suite (default bookworm)')
  .option('--add-packages <list>', 'more packages to install, comma separated')
  .option(
    '--size-gib <n>',
    'virtual size of the root disk (default 3; overlays may be larger, growpart fills them)',
  )
  .option('--compress', 'write a compressed qcow2 (smaller, slower to build)')
  .action(async (o: ImageBuildFlags & { file?: string }) => {
    const { imageBuildCommand } = await import('./commands/image.js');
    process.exitCode = await imageBuildCommand(o);
  });

const lab = program
  .command('lab')
  .description('the one-machine lab: real postgres, pgpool and sshd in network namespaces (root)');
lab
  .command('up')
  .description(
    'install what is missing, apply the lab spec, start the operator in the background, wait until healthy',
  )
  .option('-f, --file <file>', 'lab spec', undefined)
  .option('--timeout <duration>', 'give up waiting after this long (90, 90s, 5m, 1h)', parseDuration, 180_000)
  .action(async (o: { file?: string; timeout: number }) => {
    const { labUpCommand, DEFAULT_LAB_SPEC } = await import('./commands/lab.js');
    process.exitCode = await labUpCommand(await dbPath(), o.file ?? DEFAULT_LAB_SPEC, o.timeout);
  });
lab
  .command('down')
  .description('remove the lab clusters (or the one in FILE) and stop the operator lab up started')
  .option('-f, --file <file>', 'only the cluster of this spec')
  .action(async (o: { file?: string }) => {
    const { labDownCommand } = await import('./commands/lab.js');
    process.exitCode = await labDownCommand(await dbPath(), o.file);
  });
lab
  .command('fault')
  .description(
    'inject a fault: kill (SIGKILL the postmaster), partition/heal (link down/up), stop/start (whole node)',
  )
  .argument('<node>')
  .addArgument(new Argument('<action>', 'the fault').choices(LAB_FAULTS))
  .option('--cluster <name>', 'the lab cluster (default: the only one)')
  .action(async (node: string, action: string, o: { cluster?: string }) => {
    const { labFaultCommand } = await import('./commands/lab.js');
    process.exitCode = await labFaultCommand(await dbPath(), node, action, o.cluster);
  });

program
  .command('psql')
  .description('psql through pgpool (or to one node), credentials supplied without showing them')
  .argument('<cluster>')
  .argument('[psqlArgs...]', 'arguments for psql, after --')
  .option('--node <name>', 'connect straight to this node')
  .action(async (cluster: string, psqlArgs: string[], o: { node?: string }) => {
    const { psqlCommand } = await import('./commands/lab.js');
    process.exitCode = await psqlCommand(await dbPath(), cluster, o.node, psqlArgs);
  });

program
  .command('completion')
  .description('print the shell completion script (source <(pgop completion bash))')
  .addArgument(new Argument('<shell>', 'the shell').choices(['bash', 'zsh']))
  .action(async (shell: 'bash' | 'zsh') => {
    const { completionScript } = await import('./completion.js');
    process.stdout.write(completionScript(shell));
  });

program
  .command('__complete', { hidden: true })
  .description('the candidates for the last of WORDS (used by the completion scripts)')
  .argument('[words...]')
  .allowUnknownOption()
  .action(async (words: string[]) => {
    const { completeWords } = await import('./completion.js');
    const candidates = completeWords(program, words.length > 0 ? words : ['']);
    if (candidates.length > 0) process.stdout.write(`${candidates.join('\n')}\n`);
  });

const service = program.command('service').description('the systemd unit for pgop serve');
service
  .command('show')
  .description('print the unit (for --db, or the default store)')
  .action(async () => {
    const { serviceShowCommand } = await import('./commands/service.js');
    process.exitCode = await serviceShowCommand({ db: program.opts<{ db?: string }>().db });
  });
service
  .command('install')
  .description('write /etc/systemd/system/pgop.service, reload systemd and print how to enable it (root)')
  .option('--unit-dir <dir>', 'where to write the unit', '/etc/systemd/system')
  .option('--no-reload', 'do not run systemctl daemon-reload')
  .action(async (o: { unitDir: string; reload: boolean }) => {
    const { serviceInstallCommand } = await import('./commands/service.js');
    process.exitCode = await serviceInstallCommand({ db: program.opts<{ db?: string }>().db, ...o });
  });

export async function main(argv: string[]): Promise<number> {
  pinChildLocale();
  // `pgop get -w -o json | head -1`: a reader that went away ends pgop quietly, as it does `cat`
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(EXIT.ok);
  });
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    // commander's own exits (help, version, usage errors)
    const code = (err as { code?: string; exitCode?: number }).code;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      return code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help'
        ? 0
        : EXIT.invalidInput;
    }
    const cliCode = cliExitCode(err);
    if (cliCode !== undefined) {
      process.stderr.write(`error: ${messageOf(err)}\n`);
      return cliCode;
    }
    if (err instanceof SpecError) {
      process.stderr.write(`error: invalid spec\n${err.message}\n`);
    } else if (err instanceof PgopError) {
      process.stderr.write(`error: ${err.message}\n`);
      if (err.kind === 'internal')
        process.stderr.write('this is a bug in pgop; please report it with the log above\n');
    } else {
      process.stderr.write(
        `internal error: ${messageOf(err)}\n${(err as Error)?.stack ?? ''}\n` +
          `this is a bug in pgop; please report it\n`,
      );
    }
    return exitCodeFor(err);
  }
}
