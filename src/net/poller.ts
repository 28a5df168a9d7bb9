/**
 * Poller: one per switch. Runs every port that has TX work, once per event-loop turn, from one setImmediate
 * (instead of one setImmediate per port per turn). A port joins with wake(); it stays while its poll() returns
 * true and leaves when it returns false (it re-armed its kicks, or its queue is gone). Each poll() does at most the
 * port's own budget of work, so ports share a turn fairly.
 * Poll mode (`poll` in the switch's configuration, docs/configuration.md): ports never leave on their own, kicks
 * stay off, and the poller spins on setImmediate: a core for latency. Event-driven is the default.
 * Hot path: no allocation (fixed slot array, grown only when more ports join than ever before).
 */

/** What the poller runs. `pollActive` is the poller's own mark (true while the port is in its list). */
export interface Pollable {
  pollActive: boolean;
  /** One turn of work; true = run again on the next turn. Must not throw. */
  poll(): boolean;
}

export class Poller {
  /** Poll mode: ports keep polling with kicks off instead of re-arming after idle polls. */
  spin = false;
  /** Turns run (status and tests). */
  turns = 0;
  private items: (Pollable | null)[] = [];
  private count = 0;
  private scheduled = false;
  private readonly runBound = (): void => this.run();

  /** Run `p` on the next turn (and on every turn after, while its poll() returns true). */
  wake(p: Pollable): void {
    if (!p.pollActive) {
      p.pollActive = true;
      if (this.count === this.items.length) this.items.push(p);
      else this.items[this.count] = p;
      this.count++;
    }
    this.schedule();
  }

  /** Forget `p` (port detached). Safe during a turn. */
  remove(p: Pollable): void {
    if (!p.pollActive) return;
    p.pollActive = false;
    for (let i = 0; i < this.count; i++) if (this.items[i] === p) this.items[i] = null;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.runBound);
  }

  /** One turn: every port in the list once, in join order; ports that joined during the turn run on the next. */
  private run(): void {
    this.scheduled = false;
    this.turns++;
    const items = this.items;
    const n = this.count;
    for (let i = 0; i < n; i++) {
      const p = items[i];
      if (p === null) continue;
      if (!p.poll() && items[i] === p) {
        p.pollActive = false;
        items[i] = null;
      }
    }
    let keep = 0;
    for (let i = 0; i < this.count; i++) {
      const p = items[i];
      if (p !== null) items[keep++] = p;
    }
    for (let i = keep; i < this.count; i++) items[i] = null;
    this.count = keep;
    if (keep > 0) this.schedule();
  }
}
