/**
 * Per-key mutual exclusion for async work. Callers on different keys never wait on each other;
 * callers on the same key run one at a time in arrival order.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async runExclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const current = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => current);
    this.tails.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      // Drop the entry when nobody queued behind us, so the map does not grow with every key ever seen.
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Takes several keys in a fixed (sorted) order, so two callers can never deadlock on them. */
  async runExclusiveMany<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const run = (i: number): Promise<T> =>
      i === sorted.length ? fn() : this.runExclusive(sorted[i] as string, () => run(i + 1));
    return run(0);
  }

  isLocked(key: string): boolean {
    return this.tails.has(key);
  }
}
