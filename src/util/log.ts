/**
 * Logging: one pino root logger, child loggers per device ({ vm, dev, socket }) whose level follows the root's
 * (setLogLevel), and a rate limiter for guest-triggered warnings, so a hostile guest cannot flood the log
 * (docs/architecture.md §6).
 * One JSON object per line; when stdout is a terminal, lines are printed in a short human-readable form.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export interface LogOptions {
  level?: string;
  /** Human-readable output (default: when stdout is a TTY). */
  pretty?: boolean;
  destination?: DestinationStream;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? 'info';
  // pino children copy the level when they are made, so the root remembers its descendants (weakly: a removed
  // device's logger may go) for setLogLevel(). onChild is inherited, so grandchildren are registered too.
  const family = new Set<WeakRef<Logger>>();
  const onChild = (child: Logger): void => {
    if (family.size >= 2 * familyPruneMark(family)) pruneFamily(family);
    family.add(new WeakRef(child));
  };
  let root: Logger;
  if (opts.destination) root = pino({ level, base: undefined, onChild }, opts.destination);
  else if (!(opts.pretty ?? process.stdout.isTTY === true)) root = pino({ level, base: { pid: process.pid }, onChild });
  else root = pino({ level, base: undefined, onChild }, { write: (line: string) => process.stdout.write(prettyLine(line)) });
  families.set(root, family);
  return root;
}

const families = new WeakMap<Logger, Set<WeakRef<Logger>>>();
const pruneMarks = new WeakMap<Set<WeakRef<Logger>>, number>();

function familyPruneMark(family: Set<WeakRef<Logger>>): number {
  return pruneMarks.get(family) ?? 64;
}

/** Drop the references of collected loggers; the next prune happens when the set has doubled again. */
function pruneFamily(family: Set<WeakRef<Logger>>): void {
  for (const ref of family) if (ref.deref() === undefined) family.delete(ref);
  pruneMarks.set(family, Math.max(64, family.size));
}

/**
 * Set the level of a logger made by createLogger() and of every child (and grandchild) made from it so far and
 * later (`vhostctl log level`). Throws on an unknown level name, as pino does.
 */
export function setLogLevel(root: Logger, level: string): void {
  root.level = level;
  const family = families.get(root);
  if (!family) return;
  for (const ref of family) {
    const l = ref.deref();
    if (l === undefined) family.delete(ref);
    else l.level = level;
  }
}

const levelNames: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** A short human form of one pino JSON line: "12:00:01 WARN  [vm1.net0] message key=value ...". */
export function prettyLine(line: string): string {
  try {
    const o = JSON.parse(line) as Record<string, unknown>;
    const { time, level, msg, vm, dev, qemu, ...rest } = o;
    const t = new Date(Number(time)).toISOString().slice(11, 19);
    const ctx = dev ? ` [${String(dev)}]` : vm ? ` [${String(vm)}]` : '';
    const extra = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
      .join(' ');
    // QEMU arguments go on a line of their own, ready to copy.
    const tail = typeof qemu === 'string' ? `\n    ${qemu}` : '';
    return `${t} ${(levelNames[Number(level)] ?? String(level)).padEnd(5)}${ctx} ${String(msg ?? '')}${extra ? ' ' + extra : ''}${tail}\n`;
  } catch {
    return line;
  }
}

/**
 * At most `burst` lines per key every `intervalMs`; the first line after a quiet period reports how many
 * were suppressed. Uses its own coarse time check only when a line is about to be logged (never per frame).
 */
export class RateLimitedLog {
  private readonly state = new Map<string, { windowStart: number; count: number; suppressed: number }>();

  constructor(
    private readonly log: Logger,
    private readonly burst = 5,
    private readonly intervalMs = 10_000,
  ) {}

  warn(key: string, obj: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    let s = this.state.get(key);
    if (!s) {
      if (this.state.size > 1000) this.state.clear();
      s = { windowStart: now, count: 0, suppressed: 0 };
      this.state.set(key, s);
    }
    if (now - s.windowStart >= this.intervalMs) {
      if (s.suppressed > 0) obj = { ...obj, suppressed: s.suppressed };
      s.windowStart = now;
      s.count = 0;
      s.suppressed = 0;
    }
    if (s.count < this.burst) {
      s.count++;
      this.log.warn(obj, msg);
    } else {
      s.suppressed++;
    }
  }
}
