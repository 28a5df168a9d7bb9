/**
 * InflightClusters: guest cluster ranges with a metadata-changing request in flight (allocating write, discard,
 * write-zeroes). A request waits only for in-flight ranges it overlaps, then claims its own (QEMU's
 * handle_dependencies); requests on other clusters run their data I/O side by side.
 */
interface Claim {
  first: number;
  end: number;
  done: Promise<void>;
}

export class InflightClusters {
  private readonly claims: Claim[] = [];

  get size(): number {
    return this.claims.length;
  }

  /** Wait until no claim overlaps guest clusters [first, end), then claim them; call the result to release. */
  async claim(first: number, end: number): Promise<() => void> {
    for (;;) {
      const busy = this.claims.find((c) => c.first < end && first < c.end);
      if (!busy) break;
      await busy.done;
    }
    // No await between the check above and the claim below: nothing can slip in between.
    let wake!: () => void;
    const claim: Claim = { first, end, done: new Promise<void>((r) => (wake = r)) };
    this.claims.push(claim);
    return () => {
      const i = this.claims.indexOf(claim);
      if (i >= 0) this.claims.splice(i, 1);
      wake();
    };
  }
}
