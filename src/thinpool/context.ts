import type { StateStore } from "../state/store.js";
import type { DeviceRecord } from "../state/types.js";
import type { CommandRunner } from "./command.js";
import type { Dmsetup } from "./dmsetup.js";
import type { AssembledPool } from "./pool-source.js";
import { asEngineError, isErrno } from "./errors.js";
import { SECTOR_BYTES } from "./status.js";

/** Structured logger: the subset of pino the engine uses, so the engine does not depend on pino. */
export interface EngineLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** Hooks for metrics; every one optional. */
export interface EngineObserver {
  /** An active origin was suspended (its I/O frozen) for `frozenMs` around a snapshot. */
  onSuspend?(event: { device: string; pool: string; frozenMs: number }): void;
  onReconcile?(report: ReconcileReport): void;
}

export interface ReconcileReport {
  checked: number;
  reactivated: number;
  resumed: number;
  rolledForward: number;
  rolledBack: number;
  deactivated: number;
  quarantined: number;
  faulty: number;
  durationMs: number;
  /** Where `durationMs` went, summed over pools, so a slow start says which step to look at. */
  phasesMs: ReconcilePhases;
}

export interface ReconcilePhases {
  /** The one `dmsetup info` of every device, and resuming devices left suspended. */
  listing: number;
  /** Pool status reads and settling each row (rolling unfinished changes forward or back). */
  settling: number;
  /** Creating the dm devices of volumes that should be active (after a reboot). */
  reactivation: number;
  /** The metadata cross-check: metadata snapshot, thin_ls, release. */
  metadataCheck: number;
}

/** The report's device counters, in the order they are shown. */
export const RECONCILE_RESULTS = [
  "checked",
  "reactivated",
  "resumed",
  "rolledForward",
  "rolledBack",
  "deactivated",
  "quarantined",
  "faulty",
] as const satisfies ReadonlyArray<keyof ReconcileReport>;

export interface PoolRuntime extends AssembledPool {
  /** The kernel's transaction id as last read or set by the engine. */
  kernelTxid: bigint;
}

/** What the engine's parts share. */
export interface EngineContext {
  store: StateStore;
  runner: CommandRunner;
  dm: Dmsetup;
  logger: EngineLogger;
  /** Prefix of every dm device name the engine creates, e.g. "tpcsi". */
  prefix: string;
  pools: Map<string, PoolRuntime>;
  /** Size in 512-byte sectors of the block device with this "major:minor" (sysfs; a seam for tests). */
  sectorsOf: (devno: string) => Promise<number>;
  /** Sizes in sectors of every block device, by "major:minor" (/proc/partitions; a seam for tests). */
  allSectors: () => Promise<Map<string, number>>;
}

export function dmNameOf(ctx: Pick<EngineContext, "prefix">, deviceName: string): string {
  return `${ctx.prefix}-${deviceName}`;
}

export function devicePathOf(ctx: Pick<EngineContext, "prefix">, deviceName: string): string {
  return `/dev/mapper/${dmNameOf(ctx, deviceName)}`;
}

/** The thin target line for a device; the pool is named by major:minor so no /dev node is needed. */
export function thinTableOf(pool: PoolRuntime, device: Pick<DeviceRecord, "sizeBytes" | "deviceId">): string {
  return `0 ${device.sizeBytes / SECTOR_BYTES} thin ${pool.devno} ${device.deviceId}`;
}

export function dmUuidOf(deviceName: string): string {
  return `THINPOOL-CSI-${deviceName}`;
}

/** `delete <id>`; ENODATA means the id is already gone, which is what we want. */
export async function deleteThinId(
  ctx: Pick<EngineContext, "dm">,
  pool: PoolRuntime,
  deviceId: number,
): Promise<void> {
  try {
    await ctx.dm.message(pool.dmName, `delete ${deviceId}`);
  } catch (err) {
    if (!isErrno(err, "ENODATA")) throw asEngineError(err, `deleting thin id ${deviceId}`);
  }
}
