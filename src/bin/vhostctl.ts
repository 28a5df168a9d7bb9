#!/usr/bin/env node
/**
 * vhostctl: control tool for vhostd. Argument parsing and output only; the client lives in src/control/client.ts,
 * the output layout in src/control/format.ts, image creation in src/blk/qcow2/create.ts. docs/control.md.
 */
import { parseArgs } from 'node:util';
import { createQcow2, parseSize } from '../blk/qcow2/create.js';
import { controlRequest, defaultControlPath } from '../control/client.js';
import {
  formatLogLevel,
  formatQemuArgs,
  formatReload,
  formatStatus,
  formatSwitch,
  formatSwitchEdit,
} from '../control/format.js';
import type {
  ControlRequest,
  LogLevelResult,
  QemuArgsResult,
  ReloadReport,
  StatusResult,
  SwitchEditResult,
  SwitchView,
} from '../control/protocol.js';

const usage = `usage: vhostctl [-s socket] [--json] command [arguments]
commands:
  status                               every device: connection, features, queues, MTU, image, counters
  show switch NAME                     ports with flags and counters, MAC table with ages
  switch NAME flush                    forget the learned addresses
  switch NAME static MAC on PORT       add a static address
  switch NAME deladdr MAC              delete an address
  qemu-args VM [--tcg] [-m SIZE]       QEMU arguments that attach VM's interfaces and disks
  reload                               re-read the configuration file
  log level LEVEL                      fatal, error, warn, info, debug or trace
  create [-b base] -s size file        create a qcow2 v3 disk image of the given size (e.g. 50G, 512M);
                                       with -b, an overlay on base (size defaults to the base's size)
  help                                 this help
options:
  -s socket   control socket (default: $VHOSTD_CONTROL, ./run/vhostd.sock if it exists, /run/vhostd/vhostd.sock)
  --json      print the daemon's answer as JSON`;

const createUsage = 'usage: vhostctl create [-b base] -s size file';

/** A usage error: the message is followed by the usage text. */
class UsageError extends Error {}

async function create(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { b: { type: 'string', short: 'b' }, s: { type: 'string', short: 's' }, h: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.h) {
    console.log(createUsage);
    return 0;
  }
  if (positionals.length !== 1) throw new Error(`expected one image file\n${createUsage}`);
  if (values.s === undefined && values.b === undefined) throw new Error(`missing -s size\n${createUsage}`);
  const file = positionals[0]!;
  await createQcow2(file, { size: values.s !== undefined ? parseSize(values.s) : undefined, backing: values.b });
  console.log(`vhostctl: ${file} created`);
  return 0;
}

/** A control command: the request, and how to print its result for people. */
interface Command {
  req: ControlRequest;
  print(result: unknown): string;
}

function expectArgs(args: string[], n: number, form: string): void {
  if (args.length !== n) throw new UsageError(`expected: vhostctl ${form}`);
}

function parseCommand(cmd: string, args: string[]): Command {
  switch (cmd) {
    case 'status':
      expectArgs(args, 0, 'status');
      return { req: { cmd: 'status' }, print: (r) => formatStatus(r as StatusResult) };
    case 'show':
      if (args[0] !== 'switch' || args.length !== 2) throw new UsageError('expected: vhostctl show switch NAME');
      return { req: { cmd: 'show-switch', switch: args[1]! }, print: (r) => formatSwitch(r as SwitchView) };
    case 'switch': {
      const [name, op, ...rest] = args;
      if (name === undefined || op === undefined) throw new UsageError('expected: vhostctl switch NAME flush|static MAC on PORT|deladdr MAC');
      if (op === 'flush') {
        expectArgs(rest, 0, 'switch NAME flush');
        return { req: { cmd: 'switch-flush', switch: name }, print: (r) => formatSwitchEdit('flush', r as SwitchEditResult) };
      }
      if (op === 'static') {
        if (rest.length !== 3 || rest[1] !== 'on') throw new UsageError('expected: vhostctl switch NAME static MAC on PORT');
        return { req: { cmd: 'switch-static', switch: name, mac: rest[0]!, port: rest[2]! }, print: (r) => formatSwitchEdit('static', r as SwitchEditResult) };
      }
      if (op === 'deladdr') {
        expectArgs(rest, 1, 'switch NAME deladdr MAC');
        return { req: { cmd: 'switch-deladdr', switch: name, mac: rest[0]! }, print: (r) => formatSwitchEdit('deladdr', r as SwitchEditResult) };
      }
      throw new UsageError(`unknown switch operation ${JSON.stringify(op)}, expected flush, static or deladdr`);
    }
    case 'qemu-args': {
      const { values, positionals } = parseArgs({
        args,
        options: { tcg: { type: 'boolean' }, m: { type: 'string', short: 'm' } },
        allowPositionals: true,
      });
      expectArgs(positionals, 1, 'qemu-args VM [--tcg] [-m SIZE]');
      const req: ControlRequest = { cmd: 'qemu-args', vm: positionals[0]!, tcg: values.tcg ?? false };
      if (values.m !== undefined) req.memory = values.m;
      return { req, print: (r) => formatQemuArgs(r as QemuArgsResult) };
    }
    case 'reload':
      expectArgs(args, 0, 'reload');
      return { req: { cmd: 'reload' }, print: (r) => formatReload(r as ReloadReport) };
    case 'log':
      if (args[0] !== 'level' || args.length !== 2) throw new UsageError('expected: vhostctl log level LEVEL');
      return { req: { cmd: 'log-level', level: args[1]! }, print: (r) => formatLogLevel(r as LogLevelResult) };
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  }
}

async function main(argv: string[]): Promise<number> {
  let socket: string | undefined;
  let json = false;
  let i = 0;
  // Global options come before the command (`create` has its own -s).
  for (; i < argv.length && argv[i]!.startsWith('-'); i++) {
    const a = argv[i]!;
    if (a === '--json') json = true;
    else if (a === '-s' && i + 1 < argv.length) socket = argv[++i];
    else if (a.startsWith('-s') && a.length > 2) socket = a.slice(2);
    else if (a === '-h' || a === '--help') {
      console.log(usage);
      return 0;
    } else throw new UsageError(`unknown option ${a}`);
  }
  const [cmd, ...rest] = argv.slice(i);
  if (cmd === undefined) throw new UsageError('missing command');
  if (cmd === 'help') {
    console.log(usage);
    return 0;
  }
  if (cmd === 'create') return create(rest);
  // --json is also accepted after the command's arguments.
  const args = rest.filter((a) => a !== '--json');
  json ||= args.length !== rest.length;
  const command = parseCommand(cmd, args);
  const result = await controlRequest(socket ?? defaultControlPath(), command.req);
  console.log(json ? JSON.stringify(result, null, 2) : command.print(result));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const msg = err instanceof Error ? err.message : String(err);
    console.error(`vhostctl: ${msg}${err instanceof UsageError ? `\n${usage}` : ''}`);
    process.exitCode = 1;
  },
);
