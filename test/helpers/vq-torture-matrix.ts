/**
 * The hang-regression matrix: what a cell is, which cells run and what makes one pass. Shared by
 * the quick matrix in `npm test` (test/integration/hang-matrix.test.ts, 10^5 buffers per cell) and the benchmark
 * (bench/hang/hang-matrix.bench.ts, 10^5 quick, 10^7 with --full). Seeds are fixed so a run replays; set
 * VHOSTD_HANG_SEED to explore others (each cell logs its seed and the hook string that replays it).
 */
export type Lifecycle = 'steady' | 'reset' | 'restart';

export interface CellSpec {
  queueSize: number;
  eventIdx: boolean;
  lifecycle: Lifecycle;
  /** Frames B must receive (10^5 quick, 10^7 full). */
  buffers: number;
  seed: number;
  /** The no-fence build: the cell ends at the first lost notification (it must be caught). */
  mutant?: boolean;
  /** Back-end sleep in each race window (µs, default 200) on 1 pass in hookOneIn (default 4). */
  hookDelayUs?: number;
  hookOneIn?: number;
  /** Stall threshold and lost-notification observation time (default 1000 ms: the pass criterion). */
  stallMs?: number;
  /** Abandon the cell after this long (default: no limit). */
  deadlineMs?: number;
  /** Progress and diagnostics (stall dumps, lifecycle events). */
  log?: (line: string) => void;
}

export interface CellResult {
  cell: string;
  seed: number;
  hooks: string;
  /** Distinct frames B received in order. */
  buffers: number;
  /** Frames A sent. */
  sent: number;
  elapsedMs: number;
  maxStallMs: number;
  lostKicks: number;
  lostCalls: number;
  /** 1 s stalls that were neither (kicked but not consumed, frames vanished). */
  stalls: number;
  invariantViolations: string[];
  /** Mutant mode: frames B had received when the first lost notification was detected (null: never). */
  caughtAfter: number | null;
  lifecycleEvents: number;
  /** Longest lifecycle event, from its start until the rings settled again (reconnect included). */
  maxRecoveryMs: number;
  lostAcrossLifecycle: number;
  duplicatesAcrossLifecycle: number;
  /** A's TX kicks, and B's RX kicks: B refills RX and kicks when the device asks (it never should). */
  kicks: { sent: number; skipped: number; rxSent: number; rxSkipped: number };
  calls: { rx: number; tx: number; spurious: number };
  /** Ring dumps taken at each detection. */
  dumps: string[];
}

/** "q256 event_idx reset", "q16 flags steady" (the bench case and test name). */
export function cellName(c: Pick<CellSpec, 'queueSize' | 'eventIdx' | 'lifecycle' | 'mutant'>): string {
  return `q${c.queueSize} ${c.eventIdx ? 'event_idx' : 'flags'} ${c.lifecycle}${c.mutant ? ' no-fence mutant' : ''}`;
}

export const QUEUE_SIZES = [16, 64, 256, 1024] as const;
export const LIFECYCLES: readonly Lifecycle[] = ['steady', 'reset', 'restart'];
/** Pass criterion: no stall of a second or more (1 s is the OpenBSD vio tick, docs/testing.md "The hang matrix"). */
export const STALL_LIMIT_MS = 1000;

function baseSeed(): number {
  const s = Number(process.env.VHOSTD_HANG_SEED ?? 1);
  if (!Number.isInteger(s) || s < 0) throw new Error(`VHOSTD_HANG_SEED must be a non-negative integer, got ${process.env.VHOSTD_HANG_SEED}`);
  return s;
}

/** Every correct-build cell: lifecycle × queue size × EVENT_IDX, `buffers` frames each. */
export function matrixCells(buffers: number): CellSpec[] {
  const seed = baseSeed();
  const cells: CellSpec[] = [];
  for (const lifecycle of LIFECYCLES) {
    for (const queueSize of QUEUE_SIZES) {
      for (const eventIdx of [false, true]) cells.push({ queueSize, eventIdx, lifecycle, buffers, seed: seed * 1000 + cells.length });
    }
  }
  return cells;
}

/** The no-fence build (EVENT_IDX off and on): must be caught within `buffers` frames. */
export function mutantCells(buffers: number): CellSpec[] {
  const seed = baseSeed();
  return [false, true].map((eventIdx, i) => ({ queueSize: 256, eventIdx, lifecycle: 'steady', buffers, seed: seed * 1000 + 900 + i, mutant: true }));
}

/** Why a correct-build cell failed (empty: it passed). */
export function cellFailures(r: CellResult, spec: CellSpec): string[] {
  const f: string[] = [];
  if (r.buffers !== spec.buffers) f.push(`${r.buffers} of ${spec.buffers} frames delivered`);
  if (r.lostKicks) f.push(`${r.lostKicks} lost kicks`);
  if (r.lostCalls) f.push(`${r.lostCalls} lost calls`);
  if (r.stalls) f.push(`${r.stalls} stalls of ${STALL_LIMIT_MS} ms`);
  if (r.maxStallMs >= STALL_LIMIT_MS) f.push(`max stall ${r.maxStallMs} ms`);
  if (r.invariantViolations.length) f.push(`${r.invariantViolations.length} invariant violations, first: ${r.invariantViolations[0]}`);
  const events = spec.lifecycle === 'reset' ? 3 : spec.lifecycle === 'restart' ? 2 : 0;
  if (r.lifecycleEvents !== events) f.push(`${r.lifecycleEvents} of ${events} lifecycle events`);
  return f;
}

/** Why a mutant cell failed (empty: the mutant was caught, proving the matrix can fail). */
export function mutantFailures(r: CellResult, spec: CellSpec): string[] {
  if (r.caughtAfter !== null && r.lostKicks + r.lostCalls > 0 && r.caughtAfter <= spec.buffers) return [];
  return [`the no-fence build was not caught within ${spec.buffers} frames (lost kicks ${r.lostKicks}, lost calls ${r.lostCalls})`];
}

/** One line per cell for logs and failure messages: the numbers plus what replays it. */
export function cellSummary(r: CellResult): string {
  return `${r.cell}: ${r.buffers} frames in ${r.elapsedMs} ms, max stall ${r.maxStallMs} ms, lost kicks ${r.lostKicks}, lost calls ${r.lostCalls}, stalls ${r.stalls}, violations ${r.invariantViolations.length}, lifecycle ${r.lifecycleEvents} (recovery ${r.maxRecoveryMs} ms, lost ${r.lostAcrossLifecycle}, dup ${r.duplicatesAcrossLifecycle}), kicks ${r.kicks.sent} sent/${r.kicks.skipped} skipped, rx kicks ${r.kicks.rxSent} sent/${r.kicks.rxSkipped} skipped, calls rx ${r.calls.rx} tx ${r.calls.tx} spurious ${r.calls.spurious}${r.caughtAfter !== null ? `, first lost notification after ${r.caughtAfter} frames` : ''} [seed ${r.seed}, VHOSTD_TEST_HOOKS=${r.hooks}]`;
}
