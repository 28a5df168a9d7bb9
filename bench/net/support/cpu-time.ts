/**
 * CPU time a process has used (proc(5), /proc/PID/stat fields 14 utime and 15 stime, in clock ticks; all its
 * threads). Read before and after a measuring window to get the CPU a backend spent on it.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const TICK_NS = 1e9 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** utime + stime of `pid`, in ns. */
export function cpuNs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // comm (field 2) may contain spaces and parentheses: count fields after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) * TICK_NS;
}
