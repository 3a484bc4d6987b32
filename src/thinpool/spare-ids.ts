import { crashPoint } from "../util/crash-point.js";
import type { PoolRuntime, EngineContext } from "./context.js";
import { deleteThinId } from "./context.js";
import { describe, EngineError, isErrno } from "./errors.js";
import type { PoolStatus } from "./status.js";

/**
 * Spare thin ids: thin devices created ahead of need and never activated, so that CreateVolume takes
 * one in a single SQLite transaction instead of messaging the pool on the caller's time. A dm-thin device
 * has no size of its own (the table given at activation sets it) and holds no data until written, so any
 * spare serves any volume, and one costs the pool about one metadata block.
 *
 * Each spare is bracketed like every kernel change: its row is written (not ready) before create_thin
 * and marked ready after it; the rows of a top-up's spares are written together, in one transaction.
 * Start-up reconciliation deletes the thin ids of rows that are not ready (never handed out, so they hold
 * no user data) and keeps the ready ones.
 *
 * The ready mark is not a transaction of its own: it rides on the next top-up's rows, or is written when
 * the top-up ends, and until then the engine counts the spare ready from memory; that saves one fsync
 * per spare in a stream of creates. A crash before the mark only loses the spare: its row is not ready,
 * so start-up deletes its id.
 */
export interface SpareHooks {
  /** Runs `change` holding the pool's lock, counted as a change to the pool's metadata. */
  runPoolChange(pool: string, change: () => Promise<void>): Promise<void>;
  /** A pool status a capacity check may trust now. */
  capacityStatus(pool: string): Promise<PoolStatus>;
  /** Whether the pool has room to spare another id (well clear of its reserves). */
  hasRoomForSpare(pool: string, status: PoolStatus): boolean;
}

/** After a failed create_thin, no spare is made for this long (a read-only pool refuses them all). */
const PAUSE_AFTER_FAILURE_MS = 30_000;

export class SpareThinIds {
  private readonly filling = new Set<string>();
  /** Per pool, creates waiting for the next spare: told true when one was made, false when none will be. */
  private readonly waiters = new Map<string, ((made: boolean) => void)[]>();
  private readonly pausedUntil = new Map<string, number>();
  /** Per pool, spares whose create_thin succeeded and whose row has not yet been marked ready. */
  private readonly made = new Map<string, Set<number>>();
  /** Per pool, the rows the running top-up wrote and has not yet sent to the pool. */
  private readonly unsent = new Map<string, number[]>();
  private closed = false;

  constructor(
    private readonly ctx: EngineContext,
    /** How many ready spares each pool keeps; 0 turns spares off. */
    readonly target: number,
    private readonly hooks: SpareHooks,
  ) {}

  /** Removes and returns a ready spare id, in the caller's transaction; undefined when there is none. */
  take(pool: string): number | undefined {
    if (this.target <= 0) return undefined;
    // No mark is written here: a create that finds no spare then writes nothing (no commit, no fsync).
    return this.ctx.store.takeSpareId(pool, [...(this.made.get(pool) ?? [])]);
  }

  /** Spares made and not yet handed out. */
  readyCount(pool: string): number {
    const made = this.made.get(pool);
    return this.ctx.store.listSpareIds(pool).filter((spare) => spare.ready || made?.has(spare.deviceId))
      .length;
  }

  /**
   * Tops the pool's spares up to the target in the background, one create_thin at a time (each takes
   * the pool lock on its own, so a create or delete waits for at most one of them).
   */
  topUp(pool: PoolRuntime): void {
    if (this.target <= 0 || this.closed || this.filling.has(pool.name)) return;
    if ((this.pausedUntil.get(pool.name) ?? 0) > Date.now()) return;
    this.filling.add(pool.name);
    // After the caller's answer has gone out: spawning blocks this process for a moment.
    setImmediate(() => void this.fill(pool));
  }

  /**
   * Waits until the next spare is made (true) or until none will be for now (false: spares are off,
   * paused after a failure, or the pool is too near its reserves). Creates that found no spare ready
   * queue here: one create_thin each costs less than their own create_thin and set_transaction_id, which
   * would also fight the top-up for the pool lock. A true answer does not promise the spare: a
   * concurrent create may take it first.
   */
  nextMade(pool: PoolRuntime): Promise<boolean> {
    this.topUp(pool);
    if (!this.filling.has(pool.name)) return Promise.resolve(false);
    return new Promise((resolve) => {
      const queue = this.waiters.get(pool.name) ?? [];
      queue.push(resolve);
      this.waiters.set(pool.name, queue);
    });
  }

  /** Stops topping up (the store is about to close). */
  close(): void {
    this.closed = true;
    for (const pool of new Set([...this.made.keys(), ...this.unsent.keys()])) this.recordMade(pool);
    for (const pool of [...this.waiters.keys()]) this.wake(pool, false);
  }

  /** Marks the pool's made spares ready, in the caller's transaction. */
  private markMade(pool: string): void {
    for (const id of this.made.get(pool) ?? []) this.ctx.store.markSpareReady(pool, id);
  }

  /**
   * In a transaction of its own, marks the pool's made spares ready and deletes the rows of those never
   * sent to the pool (nothing to delete there), and forgets both once it committed.
   */
  private recordMade(pool: string): void {
    const unsent = this.unsent.get(pool) ?? [];
    if (!this.made.has(pool) && unsent.length === 0) return;
    this.ctx.store.transaction(() => {
      this.markMade(pool);
      for (const id of unsent) this.ctx.store.deleteSpareId(pool, id);
    });
    this.made.delete(pool);
    unsent.length = 0; // the top-up's own list: it sends none of them now
    this.unsent.delete(pool);
  }

  /**
   * Answers the pool's waiters on the next turn of the event loop, not at once: by then the top-up has
   * spawned its next create_thin (it gets there without waiting on I/O), so each waiter's commit and
   * reply run while that process runs instead of before it starts.
   */
  private wake(pool: string, made: boolean): void {
    const queue = this.waiters.get(pool) ?? [];
    this.waiters.delete(pool);
    if (queue.length > 0) setImmediate(() => queue.forEach((resolve) => resolve(made)));
  }

  private async fill(pool: PoolRuntime): Promise<void> {
    let full = false;
    try {
      while (!this.closed) {
        // Ready ones only: a row left not ready (its id could not be deleted) waits for the next start.
        const missing = this.target - this.readyCount(pool.name);
        if (missing <= 0) {
          full = true;
          return;
        }
        if (!(await this.makeBatch(pool, missing))) return;
      }
    } catch (err) {
      if (this.closed) return;
      this.pausedUntil.set(pool.name, Date.now() + PAUSE_AFTER_FAILURE_MS);
      this.ctx.logger.warn(
        { pool: pool.name, err: describe(err) },
        "could not create a spare thin id; CreateVolume messages the pool itself until one can be made",
      );
    } finally {
      // Idle (or closed, which recorded them already): nothing else will carry the marks soon, and rows
      // left unsent (no room, or a failed create_thin) are deleted.
      if (!this.closed) this.recordMade(pool.name);
      // In the same turn as the last count: a spare taken after it finds no fill running and starts one.
      this.filling.delete(pool.name);
      // Full: those still waiting try again (a spare is ready, or their next wait starts a fill).
      this.wake(pool.name, full);
    }
  }

  /**
   * Makes up to `count` spares, one create_thin at a time, their rows written ahead in one transaction
   * (one commit for the batch, not one per spare); false when the pool has no room for the next one.
   */
  private async makeBatch(pool: PoolRuntime, count: number): Promise<boolean> {
    const unsent = this.reserve(pool, count);
    this.unsent.set(pool.name, unsent);
    crashPoint("spare.intent-committed");
    while (unsent.length > 0) {
      const status = await this.hooks.capacityStatus(pool.name);
      if (this.closed || !this.hooks.hasRoomForSpare(pool.name, status)) return false;
      const deviceId = unsent.shift() as number;
      await this.hooks.runPoolChange(pool.name, () => this.createOne(pool, deviceId));
      this.wake(pool.name, true);
    }
    return true;
  }

  /** Writes the rows (not ready) of `count` new spares in one transaction, with the marks of those made. */
  private reserve(pool: PoolRuntime, count: number): number[] {
    const store = this.ctx.store;
    const ids = store.transaction(() => {
      // Before the new rows: an id in `made` may be free again (taken, then its volume deleted).
      this.markMade(pool.name);
      const reserved: number[] = [];
      for (let i = 0; i < count; i++) {
        const id = store.lowestFreeDeviceId(pool.name);
        if (id === undefined)
          throw new EngineError("NoSpace", `pool ${pool.name}: no free thin device id left`);
        store.addSpareId(pool.name, id);
        reserved.push(id);
      }
      return reserved;
    });
    this.made.delete(pool.name);
    return ids;
  }

  private async createOne(pool: PoolRuntime, deviceId: number): Promise<void> {
    const store = this.ctx.store;
    try {
      await this.ctx.dm.message(pool.dmName, `create_thin ${deviceId}`);
    } catch (err) {
      if (isErrno(err, "EEXIST")) {
        // A device the store does not know holds the id: never reuse it silently.
        store.transaction(() => {
          store.deleteSpareId(pool.name, deviceId);
          store.quarantineId(
            pool.name,
            deviceId,
            "the pool already holds this id but the store has no device for it",
          );
        });
        return;
      }
      // The id may or may not exist (a timeout); it was never handed out, so deleting it loses nothing. If
      // even that fails the row stays not ready, and the next start deletes it.
      await deleteThinId(this.ctx, pool, deviceId);
      store.deleteSpareId(pool.name, deviceId);
      throw err;
    }
    crashPoint("spare.kernel-created");
    const made = this.made.get(pool.name) ?? new Set<number>();
    this.made.set(pool.name, made.add(deviceId));
  }
}
