#!/usr/bin/env node
/**
 * vhostctl: control tool for vhostd. Argument parsing and output only; the operations live in library modules.
 *
 *   vhostctl create [-b base] -s size file     create a qcow2 v3 image (or an overlay on base)
 */
import { parseArgs } from 'node:util';
import { createQcow2, parseSize } from '../blk/qcow2/create.js';

const usage = `usage: vhostctl command [arguments]
commands:
  create [-b base] -s size file   create a qcow2 v3 disk image of the given size (e.g. 50G, 512M);
                                  with -b, an overlay on base (size defaults to the base's size)
  help                            this help`;

const createUsage = 'usage: vhostctl create [-b base] -s size file';

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

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
      console.error(usage);
      return 1;
    case '-h':
    case '--help':
    case 'help':
      console.log(usage);
      return 0;
    case 'create':
      return create(rest);
    default:
      console.error(`vhostctl: unknown command "${cmd}"\n${usage}`);
      return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`vhostctl: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
