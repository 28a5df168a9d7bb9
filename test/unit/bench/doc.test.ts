// bench/doc.ts: docs/benchmarks.md is rewritten one benchmark section at a time, so a partial run (one bench in a
// fresh clone's results file) updates that section and keeps the others, their charts and the hand-written notes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { NOTES_MARKER, generateDoc, sections } from '../../../bench/doc.js';

let dir: string;
let out: string;
let results: string;
const row = (bench: string, c: string, value: number, referenceValue: number, time: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ bench, case: c, unit: 'Mpps', value, reference: 'anchor', referenceValue, time, cpu: 'CPU A', cores: 2, node: 'v20', ...extra });

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhostd-doc-'));
  out = path.join(dir, 'benchmarks.md');
  results = path.join(dir, 'results.jsonl');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('generateDoc', () => {
  test('a results file with one bench rewrites that section only; other sections, their charts and the notes stay', () => {
    fs.writeFileSync(results, [row('net/a', 'x', 1, 2, '2026-01-01T00:00:00Z'), row('net/b', 'y', 3, 4, '2026-01-01T00:00:00Z')].join('\n'));
    generateDoc({ results, out });
    fs.appendFileSync(out, `\n${NOTES_MARKER}\n\n## How the anchor runs\n\nBy hand.\n`);
    const before = sections(fs.readFileSync(out, 'utf8'));
    expect(fs.readdirSync(path.join(dir, 'benchmarks')).sort()).toEqual(['net-a-mpps.svg', 'net-b-mpps.svg']);

    // A fresh clone: the results file holds only the bench just run, on another machine.
    fs.writeFileSync(results, row('net/a', 'x', 5, 6, '2026-02-01T00:00:00Z', { cpu: 'CPU B' }));
    generateDoc({ results, out });
    const md = fs.readFileSync(out, 'utf8');
    const after = sections(md);
    expect(after.byName.get('net/a')!.join('\n')).toContain('| x | 5 Mpps | 6 Mpps | 0.83 |');
    // net/b is kept word for word, plus the machine its figures came from (the header now names CPU B).
    const b = after.byName.get('net/b')!.join('\n');
    expect(b).toContain('| y | 3 Mpps | 4 Mpps | 0.75 |');
    expect(b).toContain('Machine: CPU A, 2 cores, Node.js v20.');
    expect(b.replace(' Machine: CPU A, 2 cores, Node.js v20.', '').trimEnd()).toBe(before.byName.get('net/b')!.join('\n').trimEnd());
    expect(md).toContain('[net/a](#neta) · [net/b](#netb)');
    expect(md).toContain('| CPU | CPU B |');
    expect(fs.readdirSync(path.join(dir, 'benchmarks')).sort()).toEqual(['net-a-mpps.svg', 'net-b-mpps.svg']);
    expect(after.notes.join('\n')).toBe(`${NOTES_MARKER}\n\n## How the anchor runs\n\nBy hand.\n`);
    // Regenerating from the same inputs changes nothing (the machine note is not added twice).
    generateDoc({ results, out });
    expect(fs.readFileSync(out, 'utf8')).toBe(md);
  });

  test('a rewritten section drops the charts it no longer draws', () => {
    fs.writeFileSync(results, row('net/a', 'x', 1, 2, '2026-01-01T00:00:00Z'));
    generateDoc({ results, out });
    fs.writeFileSync(results, JSON.stringify({ bench: 'net/a', case: 'x', unit: 'ns', value: 1, time: '2026-02-01T00:00:00Z' }));
    generateDoc({ results, out });
    expect(fs.readdirSync(path.join(dir, 'benchmarks'))).toEqual([]);
  });

  test('a reset line (a run that reports all its cases) drops the cases earlier runs wrote', () => {
    fs.writeFileSync(
      results,
      [
        row('net/a', 'old name', 1, 2, '2026-01-01T00:00:00Z'),
        row('net/b', 'y', 3, 4, '2026-01-01T00:00:00Z'),
        JSON.stringify({ bench: 'net/a', reset: true, time: '2026-02-01T00:00:00Z' }),
        row('net/a', 'new name', 5, 6, '2026-02-01T00:00:00Z'),
      ].join('\n'),
    );
    generateDoc({ results, out });
    const md = fs.readFileSync(out, 'utf8');
    expect(md).toContain('| new name | 5 Mpps | 6 Mpps | 0.83 |');
    expect(md).not.toContain('old name');
    expect(md).toContain('| y | 3 Mpps | 4 Mpps | 0.75 |');
  });

  test('targets say met or missed, several anchors are named, an unavailable case says why', () => {
    fs.writeFileSync(
      results,
      [
        row('net/a', '64 B vs P', 1, 2, '2026-01-01T00:00:00Z', { reference: 'P', target: 0.5 }),
        row('net/a', '64 B vs Q', 1, 1.5, '2026-01-01T00:00:00Z', { reference: 'Q', target: 1 }),
        row('net/a', '64 ports / 2 ports', 0.9, 1, '2026-01-01T00:00:00Z', { reference: 'P', target: 0.8, targetOn: 'value', unit: 'x' }),
        JSON.stringify({ bench: 'net/a', case: 'poll p50', unit: 'µs', value: null, unavailable: 'poll mode: not available', reference: 'P', time: '2026-01-01T00:00:00Z', lowerIsBetter: true, target: 1.2 }),
      ].join('\n'),
    );
    generateDoc({ results, out });
    const md = fs.readFileSync(out, 'utf8');
    expect(md).toContain('| 64 B vs P | 1 Mpps | 2 Mpps (P) | 0.50 | ≥ 0.5: met |');
    expect(md).toContain('| 64 B vs Q | 1 Mpps | 1.5 Mpps (Q) | 0.67 | ≥ 1: missed |');
    expect(md).toContain('| 64 ports / 2 ports | 0.9 x | 1 x (P) | 0.90 | vhostd ≥ 0.8: met |');
    expect(md).toContain('| poll p50 ↓ | poll mode: not available |  |  | ≤ 1.2: not measured |');
  });
});
