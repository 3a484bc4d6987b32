import { DeviceState, type DeviceRecord } from "../state/types.js";
import {
  deleteThinId,
  dmNameOf,
  dmUuidOf,
  thinTableOf,
  type EngineContext,
  type PoolRuntime,
  type ReconcilePhases,
  type ReconcileReport,
} from "./context.js";
import { describe } from "./errors.js";
import { readPoolMappings } from "./metadata-snapshot.js";
import { parsePoolStatus, parseThinTable, SECTOR_BYTES, type DmInfo } from "./status.js";

/**
 * Devices reactivated by one `dmsetup create --concise`: a device's spec is under 300 bytes (names are
 * at most 100 characters), so a batch stays far below the kernel's 128 KiB limit on one argument.
 */
const REACTIVATE_BATCH = 128;
/** Batches at once: dmsetup create does not message the pool, so they can run side by side. */
const REACTIVATE_CONCURRENCY = 2;

/**
 * Start-up reconciliation: compares the store with the kernel and repairs what a crash, a reboot or a
 * power cut left behind. Rules:
 * - every suspended device of ours is resumed first (a suspended origin freezes its workload);
 * - an unfinished create is rolled forward when the pool's transaction id shows it completed, else back
 *   (its device never reached a caller, so it holds no user data);
 * - an unfinished delete or grow is rolled forward (the caller asked for it);
 * - a device that should be active is reactivated; snapshots and inactive volumes stay inactive;
 * - a spare thin id whose create_thin outcome was not recorded is deleted (spares are never handed out,
 *   so they hold no data); ready spares are kept;
 * - ids in the pool's metadata the store does not know are quarantined, devices the store knows but the
 *   metadata lacks are marked faulty: nothing that may hold user data is deleted on a guess.
 * - a pool that is read-only (out of metadata space, or needing a check) or failed refuses every message:
 *   unfinished creates and deletes then wait for a start with the pool writable again, and the metadata
 *   cross-check is skipped, so the driver still starts and can unmount and report (docs/RELIABILITY.md).
 */
export async function reconcile(ctx: EngineContext): Promise<ReconcileReport> {
  const started = Date.now();
  const report: ReconcileReport = {
    checked: 0,
    reactivated: 0,
    resumed: 0,
    rolledForward: 0,
    rolledBack: 0,
    deactivated: 0,
    quarantined: 0,
    faulty: 0,
    durationMs: 0,
    phasesMs: { listing: 0, settling: 0, reactivation: 0, metadataCheck: 0 },
  };
  const phases = report.phasesMs;
  let phaseStart = started;
  /** Adds the time since the previous phase ended to `phase`. */
  const endPhase = (phase: keyof ReconcilePhases): void => {
    const now = Date.now();
    phases[phase] += now - phaseStart;
    phaseStart = now;
  };
  const prefix = `${ctx.prefix}-`;
  const live = new Map<string, DmInfo>();
  // Every device's info in one process, one more when some are open (one `dmsetup table` per device made
  // a restart with 2,000 active devices spawn 2,000); live sizes come from /proc/partitions.
  for (const device of await ctx.dm.infoAll(prefix)) live.set(device.name, device);

  for (const info of live.values()) {
    if (!info.suspended) continue;
    await ctx.dm.resume(info.name);
    report.resumed++;
    ctx.logger.warn({ dm: info.name }, "resumed a device left suspended");
  }
  // Every live size in one read, for the check of each active device below (sysfs for any it lacks).
  const listedSectors = await ctx.allSectors().catch(() => new Map<string, number>());
  const settleCtx: EngineContext = {
    ...ctx,
    sectorsOf: (devno) => {
      const sectors = listedSectors.get(devno);
      return sectors === undefined ? ctx.sectorsOf(devno) : Promise.resolve(sectors);
    },
  };
  endPhase("listing");

  for (const pool of ctx.pools.values()) {
    const poolStatus = parsePoolStatus(await ctx.dm.status(pool.dmName));
    pool.kernelTxid = poolStatus.transactionId;
    const writable = poolStatus.healthy && poolStatus.mode !== "ro";
    if (!writable)
      ctx.logger.warn(
        { pool: pool.name },
        "pool is read-only or failed: unfinished creates and deletes and the metadata cross-check wait for a writable pool",
      );
    const devices = ctx.store.listDevices({ pool: pool.name });
    const toActivate: DeviceRecord[] = [];
    for (const device of devices) {
      report.checked++;
      if (!writable && (device.state === DeviceState.Creating || device.state === DeviceState.Deleting))
        continue;
      try {
        const wantsActive = await settle(
          settleCtx,
          pool,
          device,
          live.get(dmNameOf(ctx, device.name)),
          report,
        );
        if (wantsActive) toActivate.push(wantsActive);
      } catch (err) {
        markFaulty(ctx, device, `start-up repair failed: ${describe(err)}`);
      }
    }
    if (writable) await settleSpares(ctx, pool, report);
    endPhase("settling");
    const batches = chunks(toActivate, REACTIVATE_BATCH);
    await forEachLimited(batches, REACTIVATE_CONCURRENCY, (batch) => reactivate(ctx, pool, batch, report));
    endPhase("reactivation");
    if (writable) await crossCheckMetadata(ctx, pool, report);
    endPhase("metadataCheck");
    if (pool.ownsTransactionId) ctx.store.setPoolTransactionId(pool.name, Number(pool.kernelTxid));
    report.faulty += ctx.store.countByState(pool.name).get(DeviceState.Faulty) ?? 0;
  }

  const known = new Set(ctx.store.listDevices().map((d) => dmNameOf(ctx, d.name)));
  for (const name of live.keys()) {
    if (!known.has(name))
      ctx.logger.warn({ dm: name }, "dm device with the driver's prefix is unknown to the store; left alone");
  }
  report.durationMs = Date.now() - started;
  ctx.logger.info({ reconcile: report }, "start-up reconciliation finished");
  return report;
}

/**
 * Brings one row to a settled state. Returns the device when it should be (re)activated, which the
 * caller does in parallel for speed after a reboot.
 */
async function settle(
  ctx: EngineContext,
  pool: PoolRuntime,
  device: DeviceRecord,
  live: DmInfo | undefined,
  report: ReconcileReport,
): Promise<DeviceRecord | undefined> {
  const dmName = dmNameOf(ctx, device.name);
  switch (device.state) {
    case DeviceState.Creating: {
      const intendedTxid =
        device.pending && "txid" in device.pending ? BigInt(device.pending.txid) : undefined;
      if (pool.ownsTransactionId && intendedTxid !== undefined && pool.kernelTxid === intendedTxid) {
        ctx.store.updateDevice(device.name, { state: DeviceState.Inactive, pending: null });
        report.rolledForward++;
        ctx.logger.info({ device: device.name }, "unfinished create had reached the pool; rolled forward");
      } else {
        await removeEverywhere(ctx, pool, device, live);
        report.rolledBack++;
        ctx.logger.info({ device: device.name }, "unfinished create rolled back");
      }
      return undefined;
    }
    case DeviceState.Deleting: {
      await removeEverywhere(ctx, pool, device, live);
      report.rolledForward++;
      ctx.logger.info({ device: device.name }, "unfinished delete rolled forward");
      return undefined;
    }
    case DeviceState.Resizing: {
      const target = device.pending?.op === "resize" ? device.pending : undefined;
      if (!target) throw new Error("Resizing without a recorded target size");
      const grown = { ...device, sizeBytes: Math.max(device.sizeBytes, target.sizeBytes) };
      if (live) await reloadIfShorter(ctx, pool, grown, live);
      const state = live ? DeviceState.Active : target.fromState;
      const updated = ctx.store.updateDevice(device.name, {
        state,
        sizeBytes: grown.sizeBytes,
        pending: null,
      });
      report.rolledForward++;
      return state === DeviceState.Active && !live ? updated : undefined;
    }
    case DeviceState.Activating:
    case DeviceState.Active: {
      if (!live) return device;
      if (live.deferredRemove) await ctx.dm.cancelDeferredRemove(dmName);
      await reloadIfShorter(ctx, pool, device, live);
      if (device.state === DeviceState.Activating)
        ctx.store.updateDevice(device.name, { state: DeviceState.Active });
      return undefined;
    }
    case DeviceState.Deactivating: {
      if (live) await ctx.dm.remove(dmName, { deferredIfBusy: true });
      ctx.store.updateDevice(device.name, { state: DeviceState.Inactive });
      report.deactivated++;
      return undefined;
    }
    case DeviceState.Inactive: {
      if (!live || live.deferredRemove) return undefined;
      if (live.openCount > 0) {
        // Reality wins: something has it open, so it is in use and must stay.
        ctx.store.updateDevice(device.name, { state: DeviceState.Active });
        ctx.logger.warn({ device: device.name }, "device recorded inactive is open; recorded as active");
      } else {
        await ctx.dm.remove(dmName, { deferredIfBusy: true });
        report.deactivated++;
      }
      return undefined;
    }
    case DeviceState.Faulty:
      return undefined;
  }
}

/** Deletes the spare ids whose create_thin may or may not have reached the pool. */
async function settleSpares(ctx: EngineContext, pool: PoolRuntime, report: ReconcileReport): Promise<void> {
  for (const spare of ctx.store.listSpareIds(pool.name)) {
    if (spare.ready) continue;
    await deleteThinId(ctx, pool, spare.deviceId);
    ctx.store.deleteSpareId(pool.name, spare.deviceId);
    report.rolledBack++;
    ctx.logger.info({ pool: pool.name, deviceId: spare.deviceId }, "unfinished spare thin id deleted");
  }
}

/** Removes a device from the kernel (dm device, then thin id) and then from the store. */
async function removeEverywhere(
  ctx: EngineContext,
  pool: PoolRuntime,
  device: DeviceRecord,
  live: DmInfo | undefined,
): Promise<void> {
  if (live) await ctx.dm.remove(dmNameOf(ctx, device.name), { deferredIfBusy: false });
  await deleteThinId(ctx, pool, device.deviceId);
  ctx.store.deleteDevice(device.name);
}

/**
 * Loads the recorded size when the live device is shorter (a grow that did not reach the kernel). The
 * live size is the block device's (/proc/partitions, else sysfs): 0 when the device has no live table,
 * which this loads.
 */
async function reloadIfShorter(
  ctx: EngineContext,
  pool: PoolRuntime,
  device: DeviceRecord,
  live: DmInfo,
): Promise<void> {
  const dmName = dmNameOf(ctx, device.name);
  // Without a size from either (not mounted, or a node that vanished) ask the kernel for this one table
  // instead of marking a healthy device faulty.
  const sectors = await ctx
    .sectorsOf(live.devno)
    .catch(async () => parseThinTable(await ctx.dm.table(dmName)).lengthSectors);
  if (sectors * SECTOR_BYTES >= device.sizeBytes) return;
  await ctx.dm.reload(dmName, thinTableOf(pool, device));
  await ctx.dm.resume(dmName);
}

/**
 * Brings a batch of devices back in one process and records them active in one transaction. When the
 * batch stops at a device it cannot create, the ones it made are found by name and the rest are created
 * one by one, so each failure is recorded on its own device and no healthy device is held back by it.
 */
async function reactivate(
  ctx: EngineContext,
  pool: PoolRuntime,
  batch: readonly DeviceRecord[],
  report: ReconcileReport,
): Promise<void> {
  const specOf = (device: DeviceRecord) => ({
    name: dmNameOf(ctx, device.name),
    table: thinTableOf(pool, device),
    uuid: dmUuidOf(device.name),
  });
  const made: DeviceRecord[] = [];
  try {
    await ctx.dm.createMany(batch.map(specOf));
    made.push(...batch);
  } catch (batchErr) {
    ctx.logger.warn(
      { err: describe(batchErr) },
      "a batch reactivation stopped; its devices are retried one by one",
    );
    // If even this read fails, start-up fails and is retried: guessing would mark healthy devices faulty.
    const live = await ctx.dm.infoOf(batch.map((device) => dmNameOf(ctx, device.name)));
    for (const device of batch) {
      const { name, table, uuid } = specOf(device);
      try {
        if (!live.has(name)) await ctx.dm.create(name, table, uuid);
        made.push(device);
      } catch (err) {
        markFaulty(ctx, device, `could not be reactivated: ${describe(err)}`);
      }
    }
  }
  ctx.store.transaction(() => {
    for (const device of made)
      ctx.store.updateDevice(device.name, { state: DeviceState.Active, lastError: null });
  });
  report.reactivated += made.length;
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function markFaulty(ctx: EngineContext, device: DeviceRecord, reason: string): void {
  ctx.store.updateDevice(device.name, { state: DeviceState.Faulty, lastError: reason });
  ctx.logger.error({ device: device.name, reason }, "device marked faulty");
}

/**
 * Compares the ids in the pool's metadata (thin_ls on a metadata snapshot, so the live pool is not
 * disturbed) with the store. Skipped, with a note, when thin_ls is not installed.
 */
async function crossCheckMetadata(
  ctx: EngineContext,
  pool: PoolRuntime,
  report: ReconcileReport,
): Promise<void> {
  const mappings = await readPoolMappings(ctx, pool);
  if (!mappings) return;
  const ids = new Set(mappings.keys());
  const quarantined = new Set(ctx.store.listQuarantined(pool.name).map((q) => q.deviceId));
  const spares = new Set(ctx.store.listSpareIds(pool.name).map((s) => s.deviceId));
  const byId = new Map(ctx.store.listDevices({ pool: pool.name }).map((d) => [d.deviceId, d]));
  for (const spare of spares) {
    if (ids.has(spare)) continue;
    // A spare holds nothing; one the metadata lacks (a metadata restore) is simply forgotten.
    ctx.store.deleteSpareId(pool.name, spare);
    ctx.logger.warn(
      { pool: pool.name, deviceId: spare },
      "spare thin id missing from the pool's metadata; forgotten",
    );
  }
  for (const id of ids) {
    if (byId.has(id) || quarantined.has(id) || spares.has(id)) continue;
    ctx.store.quarantineId(pool.name, id, "found in the pool's metadata but unknown to the store");
    report.quarantined++;
    ctx.logger.warn(
      { pool: pool.name, deviceId: id },
      "unknown thin id in the pool quarantined (not deleted)",
    );
  }
  for (const [id, device] of byId) {
    if (ids.has(id) || device.state === DeviceState.Faulty) continue;
    markFaulty(ctx, device, `thin id ${id} is missing from the pool's metadata`);
  }
}

async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++] as T);
  });
  await Promise.all(workers);
}
