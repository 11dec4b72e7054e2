// How pgop touches files and directories on a node as root without ever being redirected by
// another user (above all postgres, which every database superuser is through COPY ... TO
// PROGRAM). Shell functions for the constant node scripts, and the path check every spec path
// passes before it reaches a script.
//
// The rule (design.md, style 10), per operation inside a directory:
// - The directory is postgres's (and so is the file): the operation runs as postgres (setpriv,
//   no PAM). Whatever links postgres planted there, it has only postgres's rights.
// - Only root can change the way to the directory: every directory on the path as written is
//   root's and writable by root alone (or sticky: nobody else can rename root's entries), every
//   link on it is root's and leads to such a chain. Root then creates a temp file with an
//   unpredictable name (mktemp: O_EXCL, never through a link), sets mode and owner on it and
//   renames it over the target (a rename replaces a link, it never follows one).
// - Anything else is refused (exit 3, terminal): a root file in postgres's directory, a path
//   through a directory postgres owns that resolves to root's, another user's directory.
// No `chown -R`; no `rm -rf` by root in a tree another user can write (postgres removes its
// trees; root only the empty top entry, in a root-only directory).

import { terminal } from '../../errors.js';

/** Plain absolute paths: the only ones that reach node scripts (they travel as positional
 *  parameters, but pg_ctl and pg_rewind hand the data directory to `sh -c` inside double quotes,
 *  where `$`, backquote, `\` and `"` would be live). */
export const SAFE_PATH = /^\/[A-Za-z0-9_.\/-]+$/;

/** A spec path as a script may use it: absolute, normalised (no `.`/`..`/empty component, no
 *  trailing slash), [A-Za-z0-9_./-] only. Throws a terminal error otherwise. */
export function assertSafePath(what: string, path: string): string {
  const p = typeof path === 'string' && path.length > 1 ? path.replace(/\/+$/, '') : path;
  if (
    typeof p !== 'string' ||
    !SAFE_PATH.test(p) ||
    p
      .split('/')
      .slice(1)
      .some((c) => c === '' || c === '.' || c === '..') ||
    p.length > 1024
  ) {
    throw terminal(
      `cannot use ${what} ${JSON.stringify(path)}: not a plain absolute path ` +
        `(letters, digits, '_', '.', '-' and '/' only; no '..')`,
    );
  }
  return p;
}

/** A script run as another user by `as_user`: constant text without single quotes, so it can be
 *  a single-quoted shell variable of the outer script. */
export function shVar(name: string, text: string): string {
  if (text.includes("'")) throw new Error(`${name}: inner scripts must not contain single quotes`);
  return `${name}='${text}'`;
}

/** As the file's owner, in its own directory. $1 dir $2 base name $3 mode; content on stdin. */
const PUT_AS_OWNER = `umask 077
tmp=$(mktemp -- "$1/.$2.pgop-XXXXXXXXXX") || exit 1
if cat > "$tmp" && chmod "$3" -- "$tmp" && mv -f -T -- "$tmp" "$1/$2"; then exit 0; fi
rm -f -- "$tmp"
exit 1`;

/** is_system_dir's case patterns: / and the directories of the OS itself, then the trees below
 *  the OS's own directories (NODE_FS_FUNCS). */
const SYSTEM_DIRS = [
  '/',
  '/bin',
  '/boot',
  '/dev',
  '/etc',
  '/home',
  '/lib',
  '/lib32',
  '/lib64',
  '/libx32',
  '/media',
  '/mnt',
  '/opt',
  '/proc',
  '/root',
  '/run',
  '/sbin',
  '/srv',
  '/sys',
  '/tmp',
  '/usr',
  '/var',
].join('|');
const VAR_SYSTEM_DIRS = [
  '/var/lib',
  '/var/log',
  '/var/run',
  '/var/tmp',
  '/var/cache',
  '/var/spool',
  '/var/mail',
  '/var/opt',
  '/var/local',
  '/var/backups',
  '/var/lib/dpkg',
  '/var/lib/apt',
  '/var/lib/rpm',
].join('|');
const SYSTEM_TREES = [
  '/bin/*',
  '/boot/*',
  '/dev/*',
  '/etc/*',
  '/lib/*',
  '/lib32/*',
  '/lib64/*',
  '/libx32/*',
  '/proc/*',
  '/root/*',
  '/run/*',
  '/sbin/*',
  '/sys/*',
  '/tmp/*',
  '/usr/*',
  '/var/tmp/*',
  '/var/run/*',
].join('|');

/** Shell functions for scripts run as root. Failures of the rule exit 3 (terminal). */
export const NODE_FS_FUNCS =
  `
fs_die() { echo "$*" >&2; exit 3; }
# as_user USER GROUP CMD...: CMD with USER's uid, GROUP and USER's groups (no PAM session, no
# capability left: a setuid away from root drops them all)
as_user() {
  au_ids "$1" "$2" || return 1
  shift 2
  setpriv --reuid="$_au_u" --regid="$_au_g" --init-groups -- "$@"
}
# au_ids USER GROUP: their ids in _au_u/_au_g, looked up once per shell (and its subshells)
au_ids() {
  [ "$1:$2" != "$_au_key" ] || return 0
  _au_u=$(id -u -- "$1") && _au_g=$(getent group "$2" | cut -d: -f3) && [ -n "$_au_g" ] ` +
  `|| { echo "no user $1 or group $2" >&2; return 1; }
  _au_key="$1:$2"
}
# ro_dir DIR: DIR (a resolved path, no links) is a directory of root's that only root can
# change (not group/other-writable, or sticky: nobody else can rename root's entries there)
ro_dir() {
  _rd_s=$(stat -c '%u %a %F' -- "$1" 2>/dev/null) || return 1
  case "$_rd_s" in "0 "*" directory") ;; *) return 1;; esac
  _rd_m=0\${_rd_s#* }; _rd_m=\${_rd_m%% *}
  [ $(( $_rd_m & 512 )) -ne 0 ] || [ $(( $_rd_m & 18 )) -eq 0 ]
}
# ro_chain DIR: ro_dir for a resolved path and every directory above it
ro_chain() {
  _rc_p=$1
  while :; do
    ro_dir "$_rc_p" || return 1
    [ "$_rc_p" = / ] && return 0
    _rc_p=\${_rc_p%/*}; [ -n "$_rc_p" ] || _rc_p=/
  done
}
# root_only DIR: print DIR resolved when only root can change what DIR leads to: every
# directory on the way as written is root's and root-only, and every link on the way is root's
# (made by root, in a root-only directory) and leads to a root-only chain. A path through
# anything postgres owns fails, whatever it resolves to.
root_only() {
  ro_dir / || return 1
  _ro_p=""; _ro_rest=\${1#/}
  while [ -n "$_ro_rest" ]; do
    _ro_c=\${_ro_rest%%/*}
    case "$_ro_rest" in */*) _ro_rest=\${_ro_rest#*/};; *) _ro_rest="";; esac
    [ -n "$_ro_c" ] || continue
    _ro_p="$_ro_p/$_ro_c"
    if [ -L "$_ro_p" ]; then
      [ "$(stat -c %u -- "$_ro_p")" = 0 ] || return 1
      _ro_t=$(cd -P -- "$_ro_p" 2>/dev/null && pwd -P) || return 1
      ro_chain "$_ro_t" || return 1
    else
      ro_dir "$_ro_p" || return 1
    fi
  done
  (cd -P -- "$1" 2>/dev/null && pwd -P)
}
${shVar('PUT_AS_OWNER', PUT_AS_OWNER)}
# put_file MODE OWNER PATH < content: write PATH (mode, user[:group]; OWNER '' = root's in a
# root-only directory, else postgres's) through a temp file and a rename: as postgres when the
# file and its directory are postgres's, as root when only root can change the way to the
# directory; refused otherwise.
put_file() {
  _mode=$1; _own=$2; _path=$3
  _dir=\${_path%/*}; [ -n "$_dir" ] || _dir=/
  _base=\${_path##*/}
  [ -d "$_dir" ] || fs_die "cannot write $_path: no directory $_dir"
  _downer=$(stat -L -c %U -- "$_dir") || fs_die "cannot write $_path: cannot stat $_dir"
  _rdir=$(root_only "$_dir") || _rdir=""
  if [ -z "$_own" ]; then if [ -n "$_rdir" ]; then _own=root:root; else _own=postgres:postgres; fi; fi
  case "$_own" in *:*) ;; *) _own="$_own:$(id -gn -- "$_own")" ` +
  `|| fs_die "cannot write $_path: no user $_own";; esac
  _fu=\${_own%%:*}
  if [ "$_fu" = postgres ] && [ "$_downer" = postgres ]; then
    as_user postgres "\${_own#*:}" sh -c "$PUT_AS_OWNER" put "$_dir" "$_base" "$_mode" ` +
  `|| fs_die "cannot write $_path as postgres"
  elif [ -n "$_rdir" ]; then
    _tmp=$(mktemp -- "$_rdir/.$_base.pgop-XXXXXXXXXX") || fs_die "cannot write $_path: mktemp failed"
    if ! { cat > "$_tmp" && chmod "$_mode" -- "$_tmp" && chown "$_own" -- "$_tmp" ` +
  `&& mv -f -T -- "$_tmp" "$_rdir/$_base"; }; then
      rm -f -- "$_tmp"; fs_die "cannot install $_path"
    fi
  else
    fs_die "cannot write $_path as $_own: its directory $_dir is $_downer's ` +
  `and others than root can change the way to it"
  fi
}
# del_file PATH: remove PATH (a link itself, never its target), as postgres in a directory of
# postgres's, as root when only root can change the way to its directory
del_file() {
  _dir=\${1%/*}; [ -n "$_dir" ] || _dir=/
  [ -d "$_dir" ] || return 0
  _downer=$(stat -L -c %U -- "$_dir") || fs_die "cannot delete $1: cannot stat $_dir"
  if [ "$_downer" = postgres ]; then
    as_user postgres postgres rm -f -- "$1" || fs_die "cannot delete $1 as postgres"
  elif _rdir=$(root_only "$_dir"); then
    rm -f -- "$_rdir/\${1##*/}" || fs_die "cannot delete $1"
  else
    fs_die "cannot delete $1: others than root can change the way to $_dir"
  fi
}
# is_system_dir PATH: / and the directories of the OS itself; pgop never hands one to postgres
is_system_dir() {
  case "$1" in
    ${SYSTEM_DIRS}) return 0;;
    ${VAR_SYSTEM_DIRS}) return 0;;
    ${SYSTEM_TREES}) return 0;;
  esac
  return 1
}
# mk_parents PATH: create the missing directories on the way to PATH (and PATH), each as the
# owner of its parent: postgres inside postgres's directories, root where only root can change
# the way; refused elsewhere. A link on the way is followed only when root made it in a root-only
# directory. Sets MK_CREATED to the last directory made.
mk_parents() {
  _p=""; _rest=\${1#/}
  while [ -n "$_rest" ]; do
    _c=\${_rest%%/*}
    case "$_rest" in */*) _rest=\${_rest#*/};; *) _rest="";; esac
    [ -n "$_c" ] || continue
    _parent=\${_p:-/}; _p="$_p/$_c"
    if [ -L "$_p" ]; then
      { [ "$(stat -c %u -- "$_p")" = 0 ] && root_only "$_parent" >/dev/null && [ -d "$_p" ]; } ` +
  `|| fs_die "cannot use $1: $_p is a symlink another user may have made, or leads nowhere"
    elif [ -d "$_p" ]; then :
    elif [ -e "$_p" ]; then fs_die "cannot use $1: $_p is not a directory"
    else
      _po=$(stat -L -c %U -- "$_parent") || fs_die "cannot create $_p"
      if [ "$_po" = postgres ]; then
        as_user postgres postgres mkdir -m 755 -- "$_p" || fs_die "cannot create $_p as postgres"
      elif root_only "$_parent" >/dev/null; then
        mkdir -m 755 -- "$_p" || fs_die "cannot create $_p"
      else
        fs_die "cannot create $_p: others than root can change the way to $_parent, and it is not postgres's"
      fi
      MK_CREATED="$_p"
    fi
  done
}
# pg_dir PATH MODE [fixed]: PATH is a directory of postgres's, with MODE ('-': leave it).
# - only root can change the way to PATH's parent: an existing directory of postgres's keeps its
#   owner (chmod), one root made (now, or left empty by an interrupted run) is handed to postgres
#   (chown, never -R); a non-empty one of root's or another user's is refused;
# - else the way runs through postgres's directories: everything is done as postgres, and a
#   PATH that does not lead to a directory of postgres's is refused.
# Refused too: a system directory (unless 'fixed': pgop's own constant paths), a link another
# user could have made.
pg_dir() {
  [ "$3" = fixed ] || ! is_system_dir "$1" || fs_die "cannot hand $1 to postgres: it is a system directory"
  MK_CREATED=""
  mk_parents "$1"
  _gp=\${1%/*}; [ -n "$_gp" ] || _gp=/
  _t=$(cd -P -- "$1" && pwd -P) || fs_die "cannot use $1"
  _tp=\${_t%/*}; [ -n "$_tp" ] || _tp=/
  if ! { root_only "$_gp" >/dev/null && ro_chain "$_tp"; }; then
    as_user postgres postgres sh -c '[ -d "$1" ] && [ "$(stat -L -c %U -- "$1")" = postgres ] ` +
  `|| { echo "cannot use $1: not a directory of postgres" >&2; exit 3; }
      [ "$2" = - ] || [ "$(stat -L -c %a -- "$1")" = "$2" ] || chmod -- "$2" "$1"' pg_dir "$1" "$2" ` +
  `|| fs_die "cannot use $1 as a directory of postgres"
    return 0
  fi
  [ "$3" = fixed ] || ! is_system_dir "$_t" ` +
  `|| fs_die "cannot hand $1 to postgres: it leads to the system directory $_t"
  _o=$(stat -c %U -- "$_t")
  if [ "$_o" = postgres ]; then
    if [ "$2" != - ] && [ "$(stat -c %a -- "$_t")" != "$2" ]; then ` +
  `chmod "$2" -- "$_t" || fs_die "cannot chmod $1"; fi
    return 0
  fi
  [ "$_o" = root ] || fs_die "cannot hand $1 to postgres: it belongs to $_o"
  if [ "$MK_CREATED" != "$1" ] && [ -n "$(ls -A -- "$_t")" ]; then
    fs_die "cannot hand $1 to postgres: it is root's and not empty ` +
  `(let pgop create it, or make it postgres's)"
  fi
  chown postgres:postgres -- "$_t" || fs_die "cannot chown $1"
  if [ "$2" != - ]; then chmod "$2" -- "$_t" || fs_die "cannot chmod $1"; fi
}
# pg_rmtree PATH: remove the tree PATH as postgres (root never recurses into it); its top entry
# as root when it sits in a root-only directory
pg_rmtree() {
  [ -e "$1" ] || [ -L "$1" ] || return 0
  as_user postgres postgres rm -rf -- "$1" 2>/dev/null
  if [ -e "$1" ] || [ -L "$1" ]; then
    _pp=\${1%/*}; [ -n "$_pp" ] || _pp=/
    root_only "$_pp" >/dev/null && rmdir -- "$1" 2>/dev/null || { echo "cannot remove $1" >&2; return 1; }
  fi
  return 0
}
`;
