// One connection of the native binding (@unraid/libvirt) to a hypervisor URI. The binding's
// connectClose frees the connection and keeps the dangling pointer: a second close, or a call
// still running on a worker thread, touches freed memory (a GLib critical, then the process
// dies). So a connection is closed exactly once, and only when no call is running on it.

import type { Hypervisor } from '@unraid/libvirt';

export class BindingConnection {
  private busy = 0;
  private retired = false;
  private closed = false;

  constructor(private readonly h: Hypervisor) {}

  /** Run fn on the connection unless it was retired (then undefined: open a new one). */
  async use<T>(fn: (h: Hypervisor) => Promise<T>): Promise<{ value: T } | undefined> {
    if (this.retired) return undefined;
    this.busy++;
    try {
      return { value: await fn(this.h) };
    } finally {
      this.busy--;
      this.closeWhenIdle();
    }
  }

  /** No new call starts on it; it is closed once the running ones have returned. */
  retire(): void {
    this.retired = true;
    this.closeWhenIdle();
  }

  private closeWhenIdle(): void {
    if (!this.retired || this.busy > 0 || this.closed) return;
    this.closed = true;
    this.h.connectClose().catch(() => undefined);
  }
}
