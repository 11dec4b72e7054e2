// Operations that share something (a cluster's bridge and key files, a hypervisor's network)
// run one at a time in this process: each waits for the one before it under the same key,
// whether that one succeeded or failed.

export type KeyedQueue = <T>(key: string, op: () => Promise<T>) => Promise<T>;

export function createKeyedQueue(): KeyedQueue {
  const tails = new Map<string, Promise<unknown>>();
  return <T>(key: string, op: () => Promise<T>): Promise<T> => {
    const next = (tails.get(key) ?? Promise.resolve()).then(op, op);
    const tail = next.catch(() => undefined);
    tails.set(key, tail);
    // an idle key leaves nothing behind
    void tail.then(() => {
      if (tails.get(key) === tail) tails.delete(key);
    });
    return next;
  };
}
