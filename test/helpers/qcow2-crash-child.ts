/**
 * Child process for the qcow2 crash test: seeded random writes into an image with a flush every few writes.
 * Prints "w <i>" after write i completes and "f <i>" after the flush that covers writes 0..i completes; the parent
 * kills it with SIGKILL at a random moment. Run from the build: node build/test/helpers/qcow2-crash-child.js FILE SEED
 */
import { Qcow2Image } from '../../src/blk/qcow2/image.js';
import { crashWrite } from './qcow2-crash-plan.js';

const [file, seedText] = process.argv.slice(2);
const img = await Qcow2Image.open(file!, { readOnly: false });
for (let i = 0; ; i++) {
  const w = crashWrite(Number(seedText), i, img.size);
  await img.write(w.offset, [w.data]);
  process.stdout.write(`w ${i}\n`);
  if (i % 5 === 4) {
    await img.flush();
    process.stdout.write(`f ${i}\n`);
  }
}
