import { access } from "node:fs/promises";
import { StateStore } from "../state/store.js";
import { DeviceState, type DeviceKind, type DeviceRecord } from "../state/types.js";
import { crashPoint } from "../util/crash-point.js";
import { KeyedMutex } from "../util/keyed-mutex.js";
import {
  computeUsage,
  DEFAULT_CAPACITY_POLICY,
  refusalReason,
  type CapacityPolicy,
  type PoolUsage,
  wellAboveReserves,
} from "./capacity.js";
import { ExecaRunner, type CommandRunner } from "./command.js";
import {
  deleteThinId,
  devicePathOf,
  dmNameOf,
  dmUuidOf,
  thinTableOf,
  type EngineContext,
  type EngineLogger,
  type EngineObserver,
  type PoolRuntime,
  type ReconcileReport,
} from "./context.js";
import { Dmsetup, type DmsetupOptions } from "./dmsetup.js";
import { asEngineError, describe, EngineError, isErrno } from "./errors.js";
import { grownDevices, growPoolToDevices, partitionSectors, sysfsSectors } from "./pool-growth.js";
import { assemblePool, type PoolSpec } from "./pool-source.js";
import { readPoolMappings } from "./metadata-snapshot.js";
import { reconcile } from "./reconcile.js";
import { SpareThinIds } from "./spare-ids.js";
import {
  parsePoolStatus,
  parseThinStatus,
  parseThinTable,
  SECTOR_BYTES,
  type DmInfo,
  type PoolStatus,
  type ThinStatus,
} from "./status.js";

/** A pool status read (or one in flight): when it started, and the metadata generation it started in. */
interface StatusRead<T> {
  at: number;
  generation: number;
  status: T;
}

/** How a condition check reads live dm state: one call per device, or one listing for a whole page. */
interface LiveDeviceReader {
  info(dmName: string): Promise<DmInfo | undefined>;
  thinStatus(dmName: string): Promise<ThinStatus | undefined>;
}

export interface EngineOptions {
  store: StateStore;
  pools: PoolSpec[];
  logger: EngineLogger;
  runner?: CommandRunner;
  dmsetup?: DmsetupOptions;
  capacity?: CapacityPolicy;
  /** Prefix of dm device names, so the engine's devices are recognisable on the host. */
  prefix?: string;
  observer?: EngineObserver;
  /** How long a cached pool status may be used for capacity checks. */
  statusTtlMs?: number;
  /** Reads a block device's size in sectors by "major:minor" (default: sysfs). */
  sectorsOf?: (devno: string) => Promise<number>;
  /** Reads every block device's size in sectors by "major:minor" (default: /proc/partitions). */
  allSectors?: () => Promise<Map<string, number>>;
  /** Thin ids each pool keeps created ahead of CreateVolume (default 0: none). */
  spareThinIds?: number;
}

export interface CreateVolumeSpec {
  name: string;
  pool?: string;
  sizeBytes: number;
  requestName?: string;
  attributes?: Record<string, unknown>;
}

export interface CreateSnapshotSpec {
  name: string;
  /** The device to snapshot (a volume for CreateSnapshot and clone, a snapshot for restore). */
  source: string;
  /** "snapshot" for CSI snapshots; "volume" for a restore or clone, which is a writable volume. */
  kind: DeviceKind;
  /** Defaults to the source's size; may be larger (the filesystem is grown at stage). */
  sizeBytes?: number;
  requestName?: string;
  attributes?: Record<string, unknown>;
}

export interface DeviceCondition {
  abnormal: boolean;
  message: string;
}

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/** EEXIST on create means the id is held by a device the store does not know; try this many others. */
const MAX_ID_COLLISIONS = 32;
/**
 * A capacity check trusts a status that predates at most this many of the engine's own changes (each is
 * charged METADATA_BLOCKS_PER_CHANGE, ten times the most one was seen to take, so the count only bounds
 * how far that estimate is stretched).
 */
const MAX_CHANGES_SINCE_STATUS = 16;
/**
 * The status is read again in the background once the newest read predates this many changes, or three
 * quarters of the TTL: late enough that a stream of creates pays for few reads (each is a `dmsetup`
 * process, which costs the VM as much CPU as the create_thin it follows), early enough that the read
 * (100-150 ms under load in the VM) lands before checks stop trusting the last one.
 */
export const STATUS_REFRESH_AFTER_CHANGES = (MAX_CHANGES_SINCE_STATUS * 3) / 4;
export const STATUS_REFRESH_AFTER_TTL_SHARE = 3 / 4;
/** Spares are made only while at least this share of the metadata device is free. */
const SPARE_MIN_FREE_METADATA = 0.25;

/**
 * The thin-pool engine: creates, snapshots, activates, grows, deactivates and deletes thin devices,
 * with every kernel operation bracketed by persisted state (intent before, outcome after), so that a
 * crash at any point is repaired by `reconcile` at the next start.
 *
 * Locking: operations on one device are serialised by a per-device lock; operations that message the
 * pool (create, snapshot, delete, capacity-checked grow) are serialised per pool. Locks are always taken
 * device(s) first, pool last, in sorted order, so they cannot deadlock. Reads never take a lock.
 */
export class ThinPoolEngine {
  private readonly ctx: EngineContext;
  private readonly locks = new KeyedMutex();
  private readonly policy: CapacityPolicy;
  private readonly observer: EngineObserver;
  private readonly statusTtlMs: number;
  private readonly statusCache = new Map<string, StatusRead<PoolStatus>>();
  private readonly statusReads = new Map<string, StatusRead<Promise<PoolStatus>>>();
  /**
   * Per pool, bumped before and after every metadata change the engine makes (create, snapshot, delete),
   * so a status read that overlapped one is never taken for the state after it.
   */
  private readonly metadataGeneration = new Map<string, number>();
  private readyState: { ready: boolean; reason?: string } = {
    ready: false,
    reason: "start-up reconciliation has not finished",
  };
  lastReconcile: ReconcileReport | undefined;
  private readonly spares: SpareThinIds;

  private constructor(ctx: EngineContext, options: EngineOptions) {
    this.ctx = ctx;
    this.policy = options.capacity ?? DEFAULT_CAPACITY_POLICY;
    this.observer = options.observer ?? {};
    this.statusTtlMs = options.statusTtlMs ?? 1000;
    this.spares = new SpareThinIds(ctx, options.spareThinIds ?? 0, {
      runPoolChange: (pool, change) =>
        this.locks.runExclusive(poolKey(pool), () => this.changeMetadata(pool, change)),
      capacityStatus: (pool) => this.capacityStatus(pool),
      hasRoomForSpare: (pool, status) => this.hasRoomForSpare(pool, status),
    });
  }

  /** Assembles every pool, records it, reconciles the store with the kernel, and only then is ready. */
  static async open(options: EngineOptions): Promise<ThinPoolEngine> {
    const runner = options.runner ?? new ExecaRunner();
    const logger = options.logger;
    const dm = new Dmsetup(runner, {
      ...options.dmsetup,
      onWarning: (message, err) => logger.warn({ err: describe(err) }, message),
    });
    const ctx: EngineContext = {
      store: options.store,
      runner,
      dm,
      logger,
      prefix: options.prefix ?? "tpcsi",
      pools: new Map(),
      sectorsOf: options.sectorsOf ?? sysfsSectors,
      allSectors: options.allSectors ?? partitionSectors,
    };
    if (options.pools.length === 0) throw new EngineError("InvalidArgument", "no pool configured");
    for (const spec of options.pools) {
      const known = options.store.provisioned(spec.name).count;
      const assembled = await assemblePool(spec, { runner, dmsetup: dm, knownDeviceCount: known });
      const status = parsePoolStatus(await dm.status(assembled.dmName));
      ctx.pools.set(spec.name, { ...assembled, kernelTxid: status.transactionId });
      options.store.upsertPool({
        name: spec.name,
        dmName: assembled.dmName,
        source: { ...spec.source },
        ownsTransactionId: assembled.ownsTransactionId,
        blockBytes: assembled.blockBytes,
        transactionId: Number(status.transactionId),
      });
      for (const note of assembled.notes) logger.info({ pool: spec.name }, note);
    }
    const engine = new ThinPoolEngine(ctx, options);
    const report = await reconcile(ctx);
    engine.lastReconcile = report;
    engine.observer.onReconcile?.(report);
    engine.readyState = { ready: true };
    for (const pool of ctx.pools.values()) engine.spares.topUp(pool);
    return engine;
  }

  // ---------------------------------------------------------------- reads (no locks)

  get poolNames(): string[] {
    return [...this.ctx.pools.keys()];
  }

  get defaultPool(): string {
    return this.poolNames[0] as string;
  }

  getDevice(name: string): DeviceRecord | undefined {
    return this.ctx.store.getDevice(name);
  }

  /** Spare thin ids made ahead in the pool and not yet handed out. */
  readySpareIds(pool: string): number {
    return this.spares.readyCount(pool);
  }

  findByRequestName(kind: DeviceKind, requestName: string): DeviceRecord | undefined {
    return this.ctx.store.findDeviceByRequestName(kind, requestName);
  }

  listDevices(query: Parameters<StateStore["listDevices"]>[0] = {}): DeviceRecord[] {
    return this.ctx.store.listDevices(query);
  }

  devicePath(name: string): string {
    return devicePathOf(this.ctx, name);
  }

  /** The device-mapper name of a device (for operators' dmsetup commands). */
  dmNameOf(name: string): string {
    return dmNameOf(this.ctx, name);
  }

  blockBytes(pool: string): number {
    return this.pool(pool).blockBytes;
  }

  /** Rounds a size up to a whole number of pool blocks (at least one block). */
  roundSize(pool: string, bytes: number): number {
    const block = this.blockBytes(pool);
    return Math.max(block, Math.ceil(bytes / block) * block);
  }

  async poolStatus(pool: string, fresh = false): Promise<PoolStatus> {
    if (!fresh) {
      const cached = this.statusCache.get(pool);
      if (cached && Date.now() - cached.at < this.statusTtlMs) return cached.status;
      // Readers that arrive together share one `dmsetup status`: a ListVolumes page asks once per volume,
      // and each of them spawned its own process when the cache had just expired.
      const shared = this.statusReads.get(pool);
      if (shared) return shared.status;
    }
    return this.readStatus(pool);
  }

  private readStatus(pool: string): Promise<PoolStatus> {
    const started = { at: Date.now(), generation: this.generationOf(pool) };
    const status = this.ctx.dm.status(this.pool(pool).dmName).then((line) => {
      const parsed = parsePoolStatus(line);
      this.statusCache.set(pool, { ...started, status: parsed });
      return parsed;
    });
    const read = { ...started, status };
    this.statusReads.set(pool, read);
    const forget = (): void => {
      if (this.statusReads.get(pool) === read) this.statusReads.delete(pool);
    };
    status.then(forget, forget);
    return status;
  }

  private generationOf(pool: string): number {
    return this.metadataGeneration.get(pool) ?? 0;
  }

  /**
   * Runs a change to the pool's metadata. Afterwards the pool status is read again in the background
   * (unless the newest read, landed or in flight, is recent), so the next capacity checks find a status they may
   * trust and need not spawn their own. The read starts on the next turn of the event loop: spawning forks
   * this process, which blocks it, and the caller's answer should go out first.
   */
  private async changeMetadata<T>(pool: string, change: () => Promise<T>): Promise<T> {
    this.metadataGeneration.set(pool, this.generationOf(pool) + 1);
    try {
      return await change();
    } finally {
      this.metadataGeneration.set(pool, this.generationOf(pool) + 1);
      // With no cache (tests use a TTL of 0) nobody could use the read.
      if (this.statusTtlMs > 0) setImmediate(() => this.refreshStatus(pool));
    }
  }

  private refreshStatus(pool: string): void {
    const generation = this.generationOf(pool);
    // The newest read, landed or still in flight: a read under way counts (reads used to take longer
    // than a create, and each change started another).
    const newest = this.statusReads.get(pool) ?? this.statusCache.get(pool);
    if (
      newest &&
      changesBetween(newest.generation, generation) < STATUS_REFRESH_AFTER_CHANGES &&
      Date.now() - newest.at < this.statusTtlMs * STATUS_REFRESH_AFTER_TTL_SHARE
    )
      return;
    Promise.resolve()
      .then(() => this.readStatus(pool))
      .catch(() => undefined); // a failed read only means the next check reads for itself
  }

  /**
   * The status a capacity check may trust: workloads keep writing and the engine's own creates use
   * metadata, and in the full-pool suite a status one second old let a snapshot through with 28 KiB of
   * metadata left under a 51 KiB reserve. A recent status is used only if it shows free data and metadata
   * at least twice their reserves, where a second of writes cannot decide the answer, after charging it
   * for each of the engine's own changes it predates (at most MAX_CHANGES_SINCE_STATUS). Not waiting for
   * the read the previous change started keeps that process off the path of back-to-back creates. Near a
   * reserve every check reads the kernel.
   */
  private async capacityStatus(pool: string): Promise<PoolStatus> {
    const generation = this.generationOf(pool);
    const blockBytes = this.blockBytes(pool);
    const cached = this.statusCache.get(pool);
    if (cached && Date.now() - cached.at < this.statusTtlMs) {
      const changesSince = changesBetween(cached.generation, generation);
      if (
        changesSince <= MAX_CHANGES_SINCE_STATUS &&
        wellAboveReserves(cached.status, blockBytes, this.policy, changesSince)
      )
        return cached.status;
    }
    const inFlight = this.statusReads.get(pool);
    if (inFlight && inFlight.generation === generation) {
      const status = await inFlight.status.catch(() => undefined);
      if (status && wellAboveReserves(status, blockBytes, this.policy)) return status;
    }
    return this.readStatus(pool);
  }

  async poolUsage(pool: string): Promise<PoolUsage> {
    const status = await this.poolStatus(pool);
    return computeUsage(status, this.blockBytes(pool), this.ctx.store.provisioned(pool).bytes, this.policy);
  }

  get capacityPolicy(): CapacityPolicy {
    return this.policy;
  }

  /** Ready once reconciliation is done and while every pool answers and is healthy. */
  async readiness(): Promise<{ ready: boolean; reason?: string }> {
    if (!this.readyState.ready) return this.readyState;
    for (const pool of this.poolNames) {
      try {
        const status = await this.poolStatus(pool);
        if (!status.healthy || status.needsCheck)
          return { ready: false, reason: `pool ${pool} has failed or needs a metadata check` };
      } catch (err) {
        return { ready: false, reason: `pool ${pool} cannot be read: ${describe(err)}` };
      }
    }
    return { ready: true };
  }

  /**
   * Lets every pool the engine assembled use data or metadata devices that have grown, which also brings
   * a pool that ran out of space back to write mode (see pool-growth.ts). Cheap when nothing grew (two
   * sysfs reads per pool), so the driver calls it at every readiness refresh.
   */
  async adoptGrownDevices(): Promise<void> {
    for (const pool of this.ctx.pools.values()) {
      if (!pool.devices || !(await grownDevices(pool, await this.poolStatus(pool.name)))) continue;
      await this.locks.runExclusive(poolKey(pool.name), async () => {
        const note = await growPoolToDevices(pool, await this.poolStatus(pool.name, true), this.ctx.dm);
        this.statusCache.delete(pool.name);
        if (note) this.ctx.logger.info({ pool: pool.name }, note);
      });
    }
  }

  /**
   * Health of a device for CSI VolumeCondition: missing, faulty, failed, inactive when it should be active
   * (`shouldBeActive`: the caller knows it is staged or published), suspended, or in a pool that failed, is
   * read-only or is out of data space.
   */
  async deviceCondition(name: string, options: { shouldBeActive?: boolean } = {}): Promise<DeviceCondition> {
    return this.conditionOf(name, options, {
      info: (dmName) => this.ctx.dm.info(dmName),
      thinStatus: async (dmName) => parseThinStatus(await this.ctx.dm.status(dmName)),
    });
  }

  /**
   * Conditions of many devices (a ListVolumes page): one `dmsetup info` and one `status` naming the
   * page's active devices, not a listing of every device on the host (2.4 s a page at 2,000 devices in
   * the benchmark VM). A device that turned active after the page was read is asked about on its own.
   */
  async deviceConditions<T extends { name: string; state: DeviceState }>(
    devices: readonly T[],
  ): Promise<[T, DeviceCondition][]> {
    const active = devices
      .filter((d) => d.state === DeviceState.Active)
      .map((d) => dmNameOf(this.ctx, d.name));
    const listed = new Set(active);
    let infos: Promise<Map<string, DmInfo>> | undefined;
    let statuses: Promise<Map<string, string>> | undefined;
    const live: LiveDeviceReader = {
      info: async (dmName) => {
        if (!listed.has(dmName)) return this.ctx.dm.info(dmName);
        infos ??= this.ctx.dm.infoOf(active);
        return (await infos).get(dmName);
      },
      thinStatus: async (dmName) => {
        if (!listed.has(dmName)) return parseThinStatus(await this.ctx.dm.status(dmName));
        statuses ??= this.ctx.dm.thinStatusOf(active);
        const line = (await statuses).get(dmName);
        return line === undefined ? undefined : parseThinStatus(line);
      },
    };
    return Promise.all(
      devices.map(async (device): Promise<[T, DeviceCondition]> => [
        device,
        await this.conditionOf(device.name, {}, live),
      ]),
    );
  }

  private async conditionOf(
    name: string,
    options: { shouldBeActive?: boolean },
    live: LiveDeviceReader,
  ): Promise<DeviceCondition> {
    const device = this.ctx.store.getDevice(name);
    if (!device) return { abnormal: true, message: `device ${name} is not in the state store` };
    if (device.state === DeviceState.Faulty)
      return { abnormal: true, message: `device is faulty: ${device.lastError ?? "unknown reason"}` };
    const status = await this.poolStatus(device.pool).catch((err: unknown) => new Error(describe(err)));
    if (status instanceof Error)
      return { abnormal: true, message: `pool ${device.pool} cannot be read: ${status.message}` };
    if (!status.healthy || status.needsCheck)
      return { abnormal: true, message: `pool ${device.pool} has failed or needs a metadata check` };
    if (status.mode === "ro")
      return { abnormal: true, message: `pool ${device.pool} is read-only (metadata trouble)` };
    if (status.mode === "out_of_data_space" || status.dataUsedBlocks >= status.dataTotalBlocks)
      return { abnormal: true, message: `pool ${device.pool} is out of data space: writes fail` };
    const shouldBeActive = device.state === DeviceState.Active || options.shouldBeActive === true;
    if (shouldBeActive && device.state !== DeviceState.Active && device.state !== DeviceState.Resizing)
      return {
        abnormal: true,
        message: `device is ${device.state.toLowerCase()} but should be active (it is staged or published)`,
      };
    if (shouldBeActive) {
      const dmName = dmNameOf(this.ctx, name);
      const info = await live.info(dmName);
      if (!info)
        return { abnormal: true, message: "device should be active but has no device-mapper device" };
      if (info.suspended) return { abnormal: true, message: "device is suspended: I/O is frozen" };
      if ((await live.thinStatus(dmName))?.healthy === false)
        return { abnormal: true, message: "device has failed in the kernel (thin status Fail): I/O errors" };
    }
    return { abnormal: false, message: "healthy" };
  }

  /**
   * Bytes each device has mapped in its pool. Active devices are read live (one dmsetup call for all);
   * inactive volumes and snapshots have no dm device, so with `includeInactive` their figure comes from
   * the pool's metadata as of its last commit (thin_ls on a metadata snapshot, under the pool lock: the
   * operator's status command asks for it, nothing on a hot path does). Devices no source could answer
   * for are absent from the map.
   */
  async mappedBytes(options: { includeInactive?: boolean } = {}): Promise<Map<string, number>> {
    const mapped = new Map<string, number>();
    if (options.includeInactive) {
      for (const pool of this.ctx.pools.values()) {
        const mappings = await this.locks.runExclusive(poolKey(pool.name), () =>
          readPoolMappings(this.ctx, pool).catch((err: unknown) => {
            this.ctx.logger.warn({ pool: pool.name, err: describe(err) }, "cannot read the pool's metadata");
            return undefined;
          }),
        );
        if (!mappings) continue;
        for (const device of this.ctx.store.listDevices({ pool: pool.name })) {
          const bytes = mappings.get(device.deviceId);
          if (bytes !== undefined) mapped.set(device.name, bytes);
        }
      }
    }
    const prefix = `${this.ctx.prefix}-`;
    for (const [dmName, line] of await this.ctx.dm.statusAll("thin")) {
      if (!dmName.startsWith(prefix)) continue;
      const status = parseThinStatus(line);
      if (status.healthy) mapped.set(dmName.slice(prefix.length), status.mappedSectors * SECTOR_BYTES);
    }
    return mapped;
  }

  /** Replaces a device's caller-owned attributes (opaque to the engine). */
  setAttributes(name: string, attributes: Record<string, unknown>): DeviceRecord {
    this.requireDevice(name);
    return this.ctx.store.updateDevice(name, { attributes });
  }

  // ---------------------------------------------------------------- create

  /**
   * A new thin volume: a spare thin id when the pool has one ready (no kernel call on the caller's time:
   * the pool lock is not needed, as nothing in the kernel changes), else create_thin under the pool lock.
   */
  async createVolume(spec: CreateVolumeSpec): Promise<DeviceRecord> {
    validateName(spec.name);
    const poolName = spec.pool ?? this.defaultPool;
    const pool = this.pool(poolName);
    const device = {
      name: spec.name,
      kind: "volume" as const,
      sizeBytes: this.checkedSize(poolName, spec.sizeBytes),
      parent: null,
      requestName: spec.requestName ?? null,
      attributes: spec.attributes ?? {},
    };
    const fromSpare = await this.locks.runExclusive(devKey(spec.name), async () => {
      this.refuseExisting(spec.name);
      let taken = this.recordFromSpare(pool, device, await this.capacityStatus(poolName));
      while (!taken && (await this.spares.nextMade(pool)))
        taken = this.recordFromSpare(pool, device, await this.capacityStatus(poolName));
      return taken;
    });
    if (fromSpare) {
      this.spares.topUp(pool);
      return fromSpare;
    }
    return this.locks.runExclusiveMany([devKey(spec.name), poolKey(poolName)], async () => {
      this.refuseExisting(spec.name);
      const intent = this.recordCreateIntent(pool, device, await this.capacityStatus(poolName));
      crashPoint("create.intent-committed");
      return this.changeMetadata(poolName, async () => {
        try {
          await this.sendCreate(pool, intent, (id) => `create_thin ${id}`);
        } catch (err) {
          this.ctx.store.deleteDevice(spec.name);
          throw asEngineError(err, `creating thin device ${spec.name}`);
        }
        crashPoint("create.kernel-created");
        return this.finishCreate(pool, spec.name);
      });
    });
  }

  /**
   * A thin snapshot of `source`. An active origin is suspended around create_snap (the kernel requires it
   * to avoid corruption, and the suspend freezes its filesystem so the snapshot is consistent) and always
   * resumed, however create_snap ended. The result is kept inactive.
   */
  async createSnapshot(spec: CreateSnapshotSpec): Promise<DeviceRecord> {
    validateName(spec.name);
    const source = this.ctx.store.getDevice(spec.source);
    if (!source) throw new EngineError("NotFound", `source device ${spec.source} does not exist`);
    const pool = this.pool(source.pool);
    return this.locks.runExclusiveMany(
      [devKey(spec.name), devKey(spec.source), poolKey(pool.name)],
      async () => {
        this.refuseExisting(spec.name);
        const origin = this.ctx.store.getDevice(spec.source);
        if (!origin) throw new EngineError("NotFound", `source device ${spec.source} does not exist`);
        if (origin.state !== DeviceState.Active && origin.state !== DeviceState.Inactive) {
          throw new EngineError(
            origin.state === DeviceState.Faulty ? "Faulty" : "Busy",
            `source device ${spec.source} is ${origin.state}`,
          );
        }
        const sizeBytes =
          spec.sizeBytes === undefined ? origin.sizeBytes : this.checkedSize(pool.name, spec.sizeBytes);
        if (sizeBytes < origin.sizeBytes) {
          throw new EngineError(
            "OutOfRange",
            `requested ${sizeBytes} bytes is smaller than the source's ${origin.sizeBytes} bytes`,
          );
        }
        const intent = this.recordCreateIntent(
          pool,
          {
            name: spec.name,
            kind: spec.kind,
            sizeBytes,
            parent: origin.name,
            requestName: spec.requestName ?? null,
            attributes: spec.attributes ?? {},
          },
          await this.capacityStatus(pool.name),
        );
        crashPoint("snapshot.intent-committed");

        return this.changeMetadata(pool.name, () => this.snapshotOrigin(pool, origin, intent));
      },
    );
  }

  /** Suspends an active origin around create_snap, always resumes it, and records the outcome. */
  private async snapshotOrigin(
    pool: PoolRuntime,
    origin: DeviceRecord,
    intent: DeviceRecord,
  ): Promise<DeviceRecord> {
    const originDm = dmNameOf(this.ctx, origin.name);
    const live = await this.ctx.dm.info(originDm);
    let failure: unknown;
    if (live) {
      // The pool status read the previous change started would compete for the CPU with the frozen origin.
      await this.statusReads.get(pool.name)?.status.catch(() => undefined);
      try {
        await this.ctx.dm.suspend(originDm);
      } catch (err) {
        this.ctx.store.deleteDevice(intent.name);
        await this.ensureResumed(origin.name);
        throw asEngineError(err, `suspending origin ${origin.name}`);
      }
    }
    const frozenAt = Date.now();
    try {
      crashPoint("snapshot.origin-suspended");
      await this.sendCreate(pool, intent, (id) => `create_snap ${id} ${origin.deviceId}`);
      crashPoint("snapshot.kernel-created");
    } catch (err) {
      failure = err;
    } finally {
      if (live) {
        await this.ensureResumed(origin.name);
        this.observer.onSuspend?.({
          device: origin.name,
          pool: pool.name,
          frozenMs: Date.now() - frozenAt,
        });
      }
    }
    crashPoint("snapshot.origin-resumed");
    if (failure !== undefined) {
      this.ctx.store.deleteDevice(intent.name);
      throw asEngineError(failure, `snapshotting ${origin.name}`);
    }
    return this.finishCreate(pool, intent.name);
  }

  /** Records the device on a ready spare id, in one transaction with its checks; undefined when none is ready. */
  private recordFromSpare(
    pool: PoolRuntime,
    device: NewDeviceFields,
    status: PoolStatus,
  ): DeviceRecord | undefined {
    const store = this.ctx.store;
    return store.transaction(() => {
      const deviceId = this.spares.take(pool.name);
      if (deviceId === undefined) return undefined;
      this.refuseUnprovisionable(pool, device, status);
      return store.insertDevice({
        ...device,
        pool: pool.name,
        deviceId,
        state: DeviceState.Inactive,
        pending: null,
      });
    });
  }

  private refuseExisting(name: string): void {
    const existing = this.ctx.store.getDevice(name);
    if (existing)
      throw new EngineError("AlreadyExists", `device ${name} already exists (state ${existing.state})`);
  }

  private checkedSize(pool: string, bytes: number): number {
    if (!Number.isSafeInteger(bytes) || bytes <= 0)
      throw new EngineError("InvalidArgument", `size must be a positive whole number of bytes, got ${bytes}`);
    return this.roundSize(pool, bytes);
  }

  private async checkCapacity(pool: string, requestBytes: number): Promise<void> {
    this.refuseOverCapacity(pool, await this.capacityStatus(pool), requestBytes);
  }

  /** Throws NoSpace when `requestBytes` more cannot be provisioned, by `status` and the store as it is now. */
  private refuseOverCapacity(pool: string, status: PoolStatus, requestBytes: number): void {
    const usage = computeUsage(
      status,
      this.blockBytes(pool),
      this.ctx.store.provisioned(pool).bytes,
      this.policy,
    );
    const reason = refusalReason(usage, requestBytes, this.policy);
    if (reason) throw new EngineError("NoSpace", `pool ${pool}: ${reason}`);
  }

  /**
   * The checks a new device passes inside the transaction that records it, so that no other create can
   * be admitted between the check and the row (spare ids are taken without the pool lock).
   */
  private refuseUnprovisionable(pool: PoolRuntime, device: NewDeviceFields, status: PoolStatus): void {
    this.refuseOverCapacity(pool.name, status, device.sizeBytes);
    const store = this.ctx.store;
    if (device.requestName !== null && store.findDeviceByRequestName(device.kind, device.requestName)) {
      throw new EngineError("AlreadyExists", `a ${device.kind} named ${device.requestName} already exists`);
    }
  }

  /** Spares are made only well clear of the reserves, so they never bring a pool nearer to full. */
  private hasRoomForSpare(pool: string, status: PoolStatus): boolean {
    const usage = computeUsage(
      status,
      this.blockBytes(pool),
      this.ctx.store.provisioned(pool).bytes,
      this.policy,
    );
    const freeMetadata = status.metadataTotalBlocks - status.metadataUsedBlocks;
    return (
      usage.blockedBy === undefined &&
      wellAboveReserves(status, this.blockBytes(pool), this.policy) &&
      freeMetadata >= status.metadataTotalBlocks * SPARE_MIN_FREE_METADATA
    );
  }

  /** Commits the intent: a Creating row holding the lowest free device id and the transaction id to come. */
  private recordCreateIntent(pool: PoolRuntime, device: NewDeviceFields, status: PoolStatus): DeviceRecord {
    const store = this.ctx.store;
    return store.transaction(() => {
      this.refuseUnprovisionable(pool, device, status);
      const deviceId = store.lowestFreeDeviceId(pool.name);
      if (deviceId === undefined)
        throw new EngineError("NoSpace", `pool ${pool.name}: all 2^24 thin device ids are in use`);
      return store.insertDevice({
        ...device,
        pool: pool.name,
        deviceId,
        state: DeviceState.Creating,
        pending: { op: "create", txid: Number(pool.kernelTxid + 1n) },
      });
    });
  }

  /**
   * Sends create_thin/create_snap. EEXIST means a device the store does not know holds the id: record the
   * id as quarantined (never reused silently) and take the next free one.
   */
  private async sendCreate(
    pool: PoolRuntime,
    intent: DeviceRecord,
    message: (id: number) => string,
  ): Promise<void> {
    let deviceId = intent.deviceId;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.ctx.dm.message(pool.dmName, message(deviceId));
        return;
      } catch (err) {
        if (!isErrno(err, "EEXIST") || attempt >= MAX_ID_COLLISIONS) throw err;
        const store = this.ctx.store;
        const collided = deviceId;
        deviceId = store.transaction(() => {
          store.quarantineId(
            pool.name,
            collided,
            "the pool already holds this id but the store has no device for it",
          );
          const next = store.lowestFreeDeviceId(pool.name);
          if (next === undefined)
            throw new EngineError("NoSpace", `pool ${pool.name}: no free thin device id left`);
          store.updateDevice(intent.name, { deviceId: next });
          return next;
        });
        this.ctx.logger.warn(
          { pool: pool.name, deviceId: collided, next: deviceId },
          "thin device id already taken in the pool; quarantined it",
        );
      }
    }
  }

  /** Advances the pool's transaction id (when the engine owns it) and commits the created device. */
  private async finishCreate(pool: PoolRuntime, name: string): Promise<DeviceRecord> {
    const advanced = await this.advanceTransactionId(pool);
    crashPoint("create.txid-advanced");
    return this.ctx.store.transaction(() => {
      if (advanced) this.ctx.store.setPoolTransactionId(pool.name, Number(pool.kernelTxid));
      return this.ctx.store.updateDevice(name, {
        state: DeviceState.Inactive,
        pending: null,
        lastError: null,
      });
    });
  }

  /**
   * set_transaction_id old new. A failure is not fatal (the device exists and is recorded); the id then
   * simply stays, and start-up treats the next intent against the id the kernel really has.
   */
  private async advanceTransactionId(pool: PoolRuntime): Promise<boolean> {
    if (!pool.ownsTransactionId) return false;
    const next = pool.kernelTxid + 1n;
    try {
      await this.ctx.dm.message(pool.dmName, `set_transaction_id ${pool.kernelTxid} ${next}`);
      pool.kernelTxid = next;
      return true;
    } catch (err) {
      this.ctx.logger.warn(
        { pool: pool.name, err: describe(err) },
        "set_transaction_id failed; re-reading the pool's id",
      );
      pool.kernelTxid = parsePoolStatus(await this.ctx.dm.status(pool.dmName)).transactionId;
      return false;
    }
  }

  // ---------------------------------------------------------------- activate / deactivate

  /** Makes the dm device exist (idempotent) and returns its path. Cancels a pending deferred removal. */
  async activate(name: string): Promise<string> {
    return this.locks.runExclusive(devKey(name), async () => {
      const device = this.requireDevice(name);
      if (device.state === DeviceState.Faulty)
        throw new EngineError("Faulty", `device ${name} is faulty: ${device.lastError ?? ""}`);
      if (device.state === DeviceState.Creating || device.state === DeviceState.Deleting) {
        throw new EngineError("Busy", `device ${name} is ${device.state}`);
      }
      const pool = this.pool(device.pool);
      const dmName = dmNameOf(this.ctx, name);
      const live = await this.ctx.dm.info(dmName);
      if (live) {
        if (live.deferredRemove) await this.ctx.dm.cancelDeferredRemove(dmName);
        await this.verifyLiveTable(device, pool);
      } else {
        this.ctx.store.updateDevice(name, { state: DeviceState.Activating });
        crashPoint("activate.intent-committed");
        try {
          await this.ctx.dm.create(dmName, thinTableOf(pool, device), dmUuidOf(name));
        } catch (err) {
          this.ctx.store.updateDevice(name, { state: DeviceState.Inactive, lastError: describe(err) });
          throw asEngineError(err, `activating ${name}`);
        }
        crashPoint("activate.kernel-created");
      }
      await this.ensureDeviceNode(dmName);
      this.ctx.store.updateDevice(name, { state: DeviceState.Active, lastError: null });
      return devicePathOf(this.ctx, name);
    });
  }

  /** Removes the dm device (the thin device stays in the pool). Deferred when still busy. */
  async deactivate(name: string): Promise<"removed" | "deferred"> {
    return this.locks.runExclusive(devKey(name), async () => {
      const device = this.ctx.store.getDevice(name);
      if (!device) return "removed";
      const dmName = dmNameOf(this.ctx, name);
      this.ctx.store.updateDevice(name, { state: DeviceState.Deactivating });
      crashPoint("deactivate.intent-committed");
      const result = await this.ctx.dm.remove(dmName, { deferredIfBusy: true }).catch((err: unknown) => {
        this.ctx.store.updateDevice(name, { state: DeviceState.Active, lastError: describe(err) });
        throw asEngineError(err, `deactivating ${name}`);
      });
      this.ctx.store.updateDevice(name, { state: DeviceState.Inactive });
      return result;
    });
  }

  private async verifyLiveTable(device: DeviceRecord, pool: PoolRuntime): Promise<void> {
    const table = parseThinTable(await this.ctx.dm.table(dmNameOf(this.ctx, device.name)));
    if (table.deviceId !== device.deviceId || table.poolDevice !== pool.devno) {
      throw new EngineError(
        "Faulty",
        `dm device ${dmNameOf(this.ctx, device.name)} maps thin id ${table.deviceId} of ${table.poolDevice}, ` +
          `but the store records id ${device.deviceId} of ${pool.devno}`,
      );
    }
    if (table.lengthSectors * SECTOR_BYTES < device.sizeBytes) await this.reloadSize(device, pool);
  }

  /** Without udev nobody else creates /dev/mapper nodes; make sure the node is there. */
  private async ensureDeviceNode(dmName: string): Promise<void> {
    const path = `/dev/mapper/${dmName}`;
    if (
      await access(path).then(
        () => true,
        () => false,
      )
    )
      return;
    await this.ctx.dm.mknodes(dmName);
  }

  // ---------------------------------------------------------------- grow

  /** Grows a device (never shrinks). An active device gets a longer table and is resumed. */
  async resize(name: string, requestedBytes: number): Promise<DeviceRecord> {
    const device = this.requireDevice(name);
    return this.locks.runExclusiveMany([devKey(name), poolKey(device.pool)], async () => {
      const current = this.requireDevice(name);
      const sizeBytes = this.checkedSize(current.pool, requestedBytes);
      if (sizeBytes < current.sizeBytes) {
        throw new EngineError(
          "OutOfRange",
          `cannot shrink ${name} from ${current.sizeBytes} to ${sizeBytes} bytes`,
        );
      }
      if (sizeBytes === current.sizeBytes) return current;
      if (current.state !== DeviceState.Active && current.state !== DeviceState.Inactive) {
        throw new EngineError(
          current.state === DeviceState.Faulty ? "Faulty" : "Busy",
          `device ${name} is ${current.state}`,
        );
      }
      await this.checkCapacity(current.pool, sizeBytes - current.sizeBytes);
      const pool = this.pool(current.pool);
      const live = await this.ctx.dm.info(dmNameOf(this.ctx, name));
      const fromState = live ? DeviceState.Active : DeviceState.Inactive;
      this.ctx.store.updateDevice(name, {
        state: DeviceState.Resizing,
        pending: { op: "resize", sizeBytes, fromState },
      });
      crashPoint("resize.intent-committed");
      if (live) await this.reloadSize({ ...current, sizeBytes }, pool);
      crashPoint("resize.table-reloaded");
      return this.ctx.store.updateDevice(name, { state: fromState, sizeBytes, pending: null });
    });
  }

  private async reloadSize(
    device: Pick<DeviceRecord, "name" | "sizeBytes" | "deviceId">,
    pool: PoolRuntime,
  ): Promise<void> {
    const dmName = dmNameOf(this.ctx, device.name);
    await this.ctx.dm.reload(dmName, thinTableOf(pool, device));
    await this.ctx.dm.resume(dmName);
  }

  // ---------------------------------------------------------------- delete

  /**
   * Deletes a device from the pool. Idempotent: an unknown name is already deleted. Refused while the
   * dm device is open. With `discard`, the device's blocks are discarded first so the space returns to
   * the layer under the pool (loop files, SSDs).
   */
  async deleteDevice(name: string, options: { discard?: boolean } = {}): Promise<void> {
    const device = this.ctx.store.getDevice(name);
    if (!device) return;
    await this.locks.runExclusiveMany([devKey(name), poolKey(device.pool)], async () => {
      const current = this.ctx.store.getDevice(name);
      if (!current) return;
      const pool = this.pool(current.pool);
      const dmName = dmNameOf(this.ctx, name);
      const live = await this.ctx.dm.info(dmName);
      if (live && live.openCount > 0) {
        throw new EngineError(
          "Busy",
          `device ${name} is in use (open count ${live.openCount}); unmount it first`,
        );
      }
      const previous = current.state === DeviceState.Deleting ? DeviceState.Inactive : current.state;
      this.ctx.store.updateDevice(name, {
        state: DeviceState.Deleting,
        pending: { op: "delete", txid: Number(pool.kernelTxid + 1n), discard: options.discard ?? false },
      });
      crashPoint("delete.intent-committed");
      try {
        if (options.discard) await this.discardBlocks(current, pool, Boolean(live));
        // An inactive device without discard has nothing to deactivate: no remove process (we hold its lock,
        // so nothing activates it meanwhile).
        if (live || options.discard) await this.ctx.dm.remove(dmName, { deferredIfBusy: false });
      } catch (err) {
        this.ctx.store.updateDevice(name, { state: previous, pending: null, lastError: describe(err) });
        throw asEngineError(err, `deactivating ${name} for deletion`);
      }
      crashPoint("delete.deactivated");
      await this.changeMetadata(pool.name, async () => {
        await deleteThinId(this.ctx, pool, current.deviceId);
        crashPoint("delete.kernel-deleted");
        const advanced = await this.advanceTransactionId(pool);
        this.ctx.store.transaction(() => {
          this.ctx.store.deleteDevice(name);
          if (advanced) this.ctx.store.setPoolTransactionId(pool.name, Number(pool.kernelTxid));
        });
      });
    });
  }

  private async discardBlocks(device: DeviceRecord, pool: PoolRuntime, live: boolean): Promise<void> {
    const dmName = dmNameOf(this.ctx, device.name);
    if (!live) await this.ctx.dm.create(dmName, thinTableOf(pool, device), dmUuidOf(device.name));
    await this.ensureDeviceNode(dmName);
    try {
      await this.ctx.runner.run("blkdiscard", [devicePathOf(this.ctx, device.name)], { timeoutMs: 600_000 });
    } catch (err) {
      // Discard is an optimisation (space returns to the layer below); the delete itself must go on.
      this.ctx.logger.warn(
        { device: device.name, err: describe(err) },
        "blkdiscard failed; deleting without discard",
      );
    }
  }

  // ---------------------------------------------------------------- helpers

  /** Resumes a device until it answers; if it never does, the device is marked faulty and logged loudly. */
  private async ensureResumed(name: string): Promise<void> {
    const dmName = dmNameOf(this.ctx, name);
    try {
      await this.ctx.dm.resume(dmName);
    } catch (err) {
      const message = `origin ${name} could not be resumed and may still be suspended (all its I/O frozen): ${describe(err)}`;
      this.ctx.logger.error({ device: name, err: describe(err) }, message);
      this.ctx.store.updateDevice(name, { state: DeviceState.Faulty, lastError: message });
    }
  }

  private requireDevice(name: string): DeviceRecord {
    const device = this.ctx.store.getDevice(name);
    if (!device) throw new EngineError("NotFound", `device ${name} does not exist`);
    return device;
  }

  private pool(name: string): PoolRuntime {
    const pool = this.ctx.pools.get(name);
    if (!pool)
      throw new EngineError(
        "InvalidArgument",
        `unknown pool '${name}' (configured: ${this.poolNames.join(", ")})`,
      );
    return pool;
  }

  /** Whether an operation on this device is running right now (for callers that answer ABORTED). */
  isBusy(name: string): boolean {
    return this.locks.isLocked(devKey(name));
  }

  close(): void {
    this.spares.close();
    this.ctx.store.close();
  }
}

/** The caller-given fields of a device about to be recorded. */
type NewDeviceFields = Pick<
  DeviceRecord,
  "name" | "kind" | "sizeBytes" | "parent" | "requestName" | "attributes"
>;

const devKey = (name: string): string => `dev:${name}`;
const poolKey = (name: string): string => `pool:${name}`;

/**
 * How many metadata changes a status read started at generation `readAt` may have missed by `now`: one
 * per two bumps, and a change in flight when the read started counts as missed.
 */
function changesBetween(readAt: number, now: number): number {
  return Math.ceil((now - readAt) / 2);
}

function validateName(name: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new EngineError(
      "InvalidArgument",
      `device name '${name}' must be 1-100 characters of [A-Za-z0-9._-]`,
    );
  }
}
