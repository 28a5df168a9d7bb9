/**
 * Child process for the qcow2 crash test: seeded random writes into an image, QD at a time (a batch of concurrent
 * writes), with a flush after every batch (every fifth write at QD 1). Prints "w <i>" after write i completes and "f <i>" after the flush
 * that covers writes 0..i completes; the parent kills it with SIGKILL at a random moment.
 * Run from the build: node build/test/helpers/qcow2-crash-child.js FILE SEED [QD]
 */
import { Qcow2Image } from '../../src/blk/qcow2/image.js';
import { crashWrite } from './qcow2-crash-plan.js';

const [file, seedText, qdText] = process.argv.slice(2);
const qd = Number(qdText ?? 1);
const img = await Qcow2Image.open(file!, { readOnly: false });
for (let b = 0; ; b++) {
  const jobs: Promise<void>[] = [];
  for (let i = b * qd; i < (b + 1) * qd; i++) {
    const w = crashWrite(Number(seedText), i, img.size);
    jobs.push(img.write(w.offset, [w.data]).then(() => void process.stdout.write(`w ${i}\n`)));
  }
  await Promise.all(jobs);
  const last = (b + 1) * qd - 1;
  if (qd > 1 || last % 5 === 4) {
    await img.flush();
    process.stdout.write(`f ${last}\n`);
  }
}
