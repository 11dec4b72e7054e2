// Running a constant shell script on a node, and the small helpers every driver that does so
// needs. Values never become shell text: they travel as positional parameters ($1, $2, ...) of
// `sh -c <script> pgop <args...>`, and NodeShell quotes every argv word with shellQuote
// (src/drivers/ssh/quote.ts) on its way over SSH.

import type { ExecOptions, ExecResult, HostRef, NodeShell } from '../types.js';

/** A constant script and the values it reads as $1, $2, ... (rendered by a named function). */
export interface NodeScript {
  text: string;
  args: (string | number)[];
}

/** Run `script` with its arguments: sh -c <script> pgop <args...>, from / (a working directory
 *  another user could remove or replace is never inherited). */
export function runScript(
  shell: NodeShell,
  host: HostRef,
  script: NodeScript,
  opts: ExecOptions = {},
): Promise<ExecResult> {
  const argv = ['sh', '-c', `cd / || exit 1\n${script.text}`, 'pgop', ...script.args.map(String)];
  return shell.exec(host, argv, opts);
}

/** What a failed command said: the end of stderr, else of stdout, else its exit code. */
export function failureDetail(res: ExecResult): string {
  return tail(res.stderr) || tail(res.stdout) || `exit ${res.code}`;
}

/** The last `n` characters of a command's output, trimmed (an error message stays one screen). */
export function tail(s: string, n = 400): string {
  const t = s.trim();
  return t.length > n ? `...${t.slice(-n)}` : t;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
