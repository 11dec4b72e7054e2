// run() (src/drivers/lab/netns.ts) tells a program killed from outside (a fence of the namespace
// it ran in, by another process) from one it timed out itself: ip() tries the first again.

import { describe, expect, it } from 'vitest';
import { run } from '../../src/drivers/lab/netns.js';

describe('lab run()', () => {
  it('a program killed by another process is marked so; its own timeout is not', async () => {
    const killed = await run('sh', ['-c', 'kill -9 $$']).catch((e: unknown) => e);
    expect(killed).toMatchObject({ killedFromOutside: true });
    expect((killed as Error).message).toContain('killed by SIGKILL');
    const late = await run('sleep', ['5'], 100).catch((e: unknown) => e);
    expect(late).toMatchObject({ killedFromOutside: false });
    expect((late as Error).message).toContain('timed out after 100 ms');
    const failed = await run('sh', ['-c', 'echo no >&2; exit 3']).catch((e: unknown) => e);
    expect(failed).toMatchObject({ killedFromOutside: false, exitCode: 3 });
  });
});
