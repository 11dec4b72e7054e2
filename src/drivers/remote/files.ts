// The remote file sync both the postgres and the pgpool driver use: write, create-if-missing or
// delete files on a node as root, in one SSH round trip when nothing changed and two when
// something did. How a file is written safely (as its owner, or by root through a private temp
// file and a rename, never through a link) is src/drivers/ssh/node-fs.ts.

import { createHash } from 'node:crypto';
import type { HostRef, NodeShell } from '../types.js';
import { internal, terminal } from '../../errors.js';
import { NODE_FS_FUNCS, SAFE_PATH, shVar } from '../ssh/node-fs.js';
import { failureDetail, runScript, type NodeScript } from './run.js';

/** One file operation: write (replace when different), create (only when missing), delete.
 *  Mode defaults to 0600, owner to postgres:postgres. */
export interface FileOp {
  op: 'write' | 'create' | 'delete';
  path: string;
  content?: string;
  mode?: number;
  owner?: string;
}

/** The postgres data directory step of the first round trip (see putFiles). */
export interface DataDirPrep {
  dataDir: string;
  confDir: string;
  includeLine: string;
  /** after a copy: drop the copied replication slots and postmaster.opts */
  clean: boolean;
}

/** Write, create-if-missing or delete files on a host in one round trip when nothing changed, two
 *  when something did: the first compares (stat + sha256sum of every path; with `pre`, it also
 *  makes sure conf.d exists and postgresql.conf includes it, and after a copy drops the copied
 *  replication slots, as postgres), the second writes only what differs (contents travel on
 *  stdin, never on a command line). A file of postgres's in a directory of postgres's is written
 *  by postgres; any other only where nobody but root can change the way to its directory, by
 *  root (temp file with a random name, then a rename); anything else is refused. Returns the
 *  paths that changed. */
export async function putFiles(
  shell: NodeShell,
  host: HostRef,
  files: FileOp[],
  pre?: DataDirPrep,
): Promise<Set<string>> {
  for (const f of files)
    if (!SAFE_PATH.test(f.path)) throw internal(`cannot write ${JSON.stringify(f.path)}: unsafe path`);
  const run = async (what: string, script: NodeScript, input?: string) => {
    const res = await runScript(shell, host, script, { user: 'root', input });
    if (res.code !== 0) throw terminal(`cannot ${what} on ${host.id}: ${failureDetail(res)}`);
    return res;
  };
  const res = await run(
    'check files',
    checkFilesScript(
      files.map((f) => f.path),
      pre,
    ),
  );
  const changed = new Set<string>();
  const { stat, sums, includeAdded } = parseCheck(res.stdout);
  if (includeAdded && pre) changed.add(`${pre.dataDir}/postgresql.conf`);
  const todo: string[] = [];
  for (const f of files) {
    const line = writeLine(f, stat.get(f.path), sums.get(f.path));
    if (line) todo.push(line);
  }
  if (todo.length === 0) return changed;
  const w = await run('write files', { text: WRITE_FILES_SH, args: [] }, `${todo.join('\n')}\n`);
  for (const l of w.stdout.split('\n')) if (l.startsWith('changed ')) changed.add(l.slice(8));
  return changed;
}

/** CHECK_FILES_SH's answer: "<mode> <owner>" (or why it is not a regular file) and sha256 per path. */
function parseCheck(stdout: string): {
  stat: Map<string, string>;
  sums: Map<string, string>;
  includeAdded: boolean;
} {
  const stat = new Map<string, string>();
  const sums = new Map<string, string>();
  let includeAdded = false;
  for (const line of stdout.split('\n')) {
    if (line === 'include added') includeAdded = true;
    // anything but a regular file (a symlink someone planted) never matches: it is replaced
    let m = /^S (\d+) (\S+) ([^|]+)\|(\S+)$/.exec(line);
    if (m) stat.set(m[4]!, m[3]!.startsWith('regular') ? `${m[1]} ${m[2]}` : `not a regular file: ${m[3]}`);
    m = /^([0-9a-f]{64}) {2}(\S+)$/.exec(line);
    if (m) sums.set(m[2]!, m[1]!);
  }
  return { stat, sums, includeAdded };
}

/** The WRITE_FILES_SH line for one operation, or null when the node already has it. */
function writeLine(f: FileOp, have: string | undefined, haveSum: string | undefined): string | null {
  if (f.op === 'delete') return have !== undefined ? `d 0 - ${f.path} -` : null;
  if (f.op === 'create' && have !== undefined) return null;
  const mode = (f.mode ?? 0o600).toString(8);
  const owner = f.owner ?? 'postgres:postgres';
  if (!/^[0-7]{3,4}$/.test(mode) || !/^[a-z_][a-z0-9_-]*:[a-z_][a-z0-9_-]*$/.test(owner))
    throw internal(`bad file mode/owner for ${f.path}`);
  const content = f.content ?? '';
  const sum = createHash('sha256').update(content, 'utf8').digest('hex');
  if (have === `${mode} ${owner}` && haveSum === sum) return null;
  return `w ${mode} ${owner} ${f.path} ${printfEscape(content)}`;
}

/** Content for dash/bash `printf '%b'` on ONE line: printable ASCII as is (backslash doubled),
 *  everything else (newline, space, tab, bytes >= 0x7f) as \0NNN octal escapes. */
export function printfEscape(content: string): string {
  let out = '';
  for (const b of Buffer.from(content, 'utf8')) {
    if (b === 0x5c) out += '\\\\';
    else if (b > 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += `\\0${b.toString(8).padStart(3, '0')}`;
  }
  return out;
}

// ------------------------------------------------------------------------------ scripts

function checkFilesScript(paths: string[], pre?: DataDirPrep): NodeScript {
  const args = [
    pre?.dataDir ?? '',
    pre?.confDir ?? '',
    pre?.includeLine ?? '',
    pre?.clean ? '1' : '0',
    ...paths,
  ];
  return { text: CHECK_FILES_SH, args };
}

/** Empties pg_replslot in the data directory $d (PRE_AS_PG, after a copy). */
const CLEAR_SLOTS = 'find "$d/pg_replslot" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +';

/** As postgres (the data directory's owner), from CHECK_FILES_SH. $1 data dir $2 conf.d name
 *  $3 include line $4 clean (1) after a copy. */
const PRE_AS_PG = `d="$1"; c="$2"; line="$3"
[ -f "$d/postgresql.conf" ] || { echo "no postgresql.conf in $d" >&2; exit 3; }
if [ ! -d "$d/$c" ]; then mkdir -m 700 -- "$d/$c" || exit 1; fi
if ! grep -qxF -- "$line" "$d/postgresql.conf"; then
  printf "\\n# pgop: managed settings\\n%s\\n" "$line" >> "$d/postgresql.conf" || exit 1
  echo "include added"
fi
if [ "$4" = 1 ]; then
  if [ -d "$d/pg_replslot" ]; then ${CLEAR_SLOTS} || exit 1; fi
  rm -f -- "$d/postmaster.opts"
fi
exit 0`;

/** As root. $1 data dir ('' = none) $2 conf.d name $3 include line $4 clean (1) after a copy,
 *  $5... paths: "S <mode> <owner:group> <type>|<path>" for each existing one and
 *  "<sha256>  <path>" for each regular file. The data directory's part (conf.d exists,
 *  postgresql.conf includes it, after a copy no copied slots) runs as postgres, its owner:
 *  root never writes in a directory postgres can change. */
const CHECK_FILES_SH =
  `${NODE_FS_FUNCS}
${shVar('PRE_AS_PG', PRE_AS_PG)}
d="$1"; c="$2"; line="$3"; clean="$4"
shift 4
if [ -n "$d" ]; then
  [ -d "$d" ] && [ "$(stat -L -c %U -- "$d")" = postgres ] ` +
  `|| fs_die "cannot configure $d: not a directory of postgres"
  as_user postgres postgres sh -c "$PRE_AS_PG" pre "$d" "$c" "$line" "$clean" || exit $?
fi
[ $# -gt 0 ] || exit 0
stat -c 'S %a %U:%G %F|%n' -- "$@" 2>/dev/null
n=$#
for p in "$@"; do if [ -f "$p" ] && [ ! -L "$p" ]; then set -- "$@" "$p"; fi; done
shift $n
[ $# -gt 0 ] && sha256sum -- "$@" 2>/dev/null
exit 0
`;

/** As root. stdin: "w <mode> <owner> <path> <printf %b content>" or "d 0 - <path> -" lines.
 *  Each file is written by put_file / removed by del_file (src/drivers/ssh/node-fs.ts): as
 *  postgres in postgres's directories, by root in root-only ones; never through a link. */
const WRITE_FILES_SH = `${NODE_FS_FUNCS}
au_ids postgres postgres 2>/dev/null
while read -r op mode owner path content; do
  case "$op" in
    d)
      (del_file "$path") || exit $?
      echo "changed $path";;
    w)
      printf '%b' "$content" | (put_file "$mode" "$owner" "$path") || exit $?
      echo "changed $path";;
  esac
done
exit 0
`;
