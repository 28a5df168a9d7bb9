/**
 * Poller (src/net/poller.ts): membership over turns. A port runs once per turn while its poll() says so, in join
 * order; one that joins during a turn runs from the next one; remove() works during a turn; an empty poller
 * schedules nothing (an idle daemon does not spin unless poll mode keeps ports in).
 */
import { describe, expect, test } from 'vitest';
import { Poller, type Pollable } from '../../../src/net/poller.js';

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

class P implements Pollable {
  pollActive = false;
  runs = 0;
  constructor(
    readonly log: string[],
    readonly name: string,
    public left: number,
    readonly during?: () => void,
  ) {}
  poll(): boolean {
    this.runs++;
    this.log.push(this.name);
    this.during?.();
    return --this.left > 0;
  }
}

describe('Poller', () => {
  test('each port runs once per turn in join order until its poll() returns false', async () => {
    const poller = new Poller();
    const log: string[] = [];
    const a = new P(log, 'a', 3);
    const b = new P(log, 'b', 1);
    poller.wake(a);
    poller.wake(b);
    poller.wake(a); // already in: no second slot
    await turn();
    await turn();
    await turn();
    await turn();
    expect(log).toEqual(['a', 'b', 'a', 'a']);
    expect([a.pollActive, b.pollActive]).toEqual([false, false]);
    const t = poller.turns;
    await turn();
    expect(poller.turns).toBe(t); // nothing left: no turn scheduled
  });

  test('a port woken during a turn runs from the next turn; a port removed during a turn does not run again', async () => {
    const poller = new Poller();
    const log: string[] = [];
    const late = new P(log, 'late', 1);
    const victim = new P(log, 'victim', 10);
    const first = new P(log, 'first', 2, () => {
      poller.wake(late);
      poller.remove(victim);
    });
    poller.wake(first);
    poller.wake(victim);
    await turn();
    expect(log).toEqual(['first']);
    await turn();
    expect(log).toEqual(['first', 'first', 'late']);
    expect(victim.runs).toBe(0);
    expect(victim.pollActive).toBe(false);
    poller.wake(victim); // back after removal
    await turn();
    expect(log.at(-1)).toBe('victim');
  });

  test('a port that returns false and is woken again later joins again', async () => {
    const poller = new Poller();
    const log: string[] = [];
    const a = new P(log, 'a', 1);
    poller.wake(a);
    await turn();
    expect(a.pollActive).toBe(false);
    a.left = 2;
    poller.wake(a);
    await turn();
    await turn();
    expect(log).toEqual(['a', 'a', 'a']);
  });
});
