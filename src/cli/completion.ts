// Shell completion. The shell scripts are thin: they hand the words typed so far to the hidden
// `pgop __complete` command, which answers from commander's own command tree, so a new command,
// flag or choice completes without touching the scripts.

import type { Command, Option } from 'commander';

const takesValue = (o: Option) => o.required || o.optional;

function findOption(cmd: Command, global: Command, word: string): Option | undefined {
  const flag = word.split('=')[0];
  return [...cmd.options, ...global.options].find((o) => o.long === flag || o.short === flag);
}

/** Candidates for the last of `words` (the words after the program name; the last may be ''). */
export function completeWords(program: Command, words: string[]): string[] {
  const current = words.at(-1) ?? '';
  let cmd = program;
  let positional = 0;
  let pendingValue: Option | undefined;
  for (const word of words.slice(0, -1)) {
    if (pendingValue) {
      pendingValue = undefined;
    } else if (word.startsWith('-')) {
      const opt = findOption(cmd, program, word);
      if (opt && takesValue(opt) && !word.includes('=')) pendingValue = opt;
    } else {
      const sub =
        positional === 0
          ? cmd.commands.find((c) => c.name() === word || c.aliases().includes(word))
          : undefined;
      if (sub) cmd = sub;
      else positional++;
    }
  }
  // a flag's value: its choices, else nothing (the shell falls back to file names)
  if (pendingValue) return filter(pendingValue.argChoices ?? [], current);
  if (current.startsWith('-')) {
    const help = cmd.createHelp();
    const options = [...help.visibleOptions(cmd), ...(cmd === program ? [] : help.visibleOptions(program))];
    const flags = options.flatMap((o) => (o.long ? [o.long] : o.short ? [o.short] : []));
    return filter([...new Set(flags)], current);
  }
  const subs = cmd
    .createHelp()
    .visibleCommands(cmd)
    .map((c) => c.name());
  if (subs.length > 0 && positional === 0) return filter(subs, current);
  const arg = cmd.registeredArguments[positional] ?? cmd.registeredArguments.at(-1);
  return filter(arg?.argChoices ?? [], current);
}

const filter = (candidates: readonly string[], prefix: string) =>
  candidates.filter((c) => c.startsWith(prefix));

const BASH = `# pgop bash completion: source <(pgop completion bash), or save it to
# /etc/bash_completion.d/pgop
_pgop() {
  local IFS=$'\\n'
  local cur="\${COMP_WORDS[COMP_CWORD]}"
  local typed=("\${COMP_WORDS[@]:1:COMP_CWORD}")
  COMPREPLY=($(compgen -W "$("\${COMP_WORDS[0]}" __complete -- "\${typed[@]}" 2>/dev/null)" -- "$cur"))
}
complete -o default -F _pgop pgop
`;

const ZSH = `#compdef pgop
# pgop zsh completion: source <(pgop completion zsh) after compinit, or save it as _pgop in a
# directory of $fpath
_pgop() {
  local out
  out="$(\${words[1]} __complete -- "\${(@)words[2,CURRENT]}" 2>/dev/null)"
  if [[ -z "$out" ]]; then
    _files
    return
  fi
  compadd -- "\${(@f)out}"
}
compdef _pgop pgop
`;

export function completionScript(shell: 'bash' | 'zsh'): string {
  return shell === 'bash' ? BASH : ZSH;
}
