/**
 * Plugs the thin-pool engine and the Controller/Node services into the driver process. The server
 * starts listening before the engine has assembled its pools and reconciled (so Probe can say "not
 * ready"); until then every Controller/Node call answers UNAVAILABLE, which the sidecars retry.
 */
import { status } from "@grpc/grpc-js";
import { access } from "node:fs/promises";
import { join } from "node:path";
import { createControllerService } from "../controller/controller-service.js";
import { CsiError } from "../csi/errors.js";
import type { ControllerHandlers, NodeHandlers, RpcContext } from "../csi/types.js";
import type { Readiness } from "../identity/identity-service.js";
import type { FilesystemType } from "../node/filesystem.js";
import { createNodeService } from "../node/node-service.js";
import { StateStore } from "../state/store.js";
import { ExecaRunner } from "../thinpool/command.js";
import { ThinPoolEngine } from "../thinpool/engine.js";
import type { PoolSpec } from "../thinpool/pool-source.js";
import { errorMessage } from "../util/errors.js";
import type { DriverConfig, PoolConfig } from "./config.js";
import type { DriverContext, DriverEngine, DriverFactories } from "./driver.js";
import { nodeEventsFor, reportPressureChange, type NodeEvents } from "./node-events.js";
import { buildNodeStatus, type NodeStatusReport } from "./node-status.js";
import { PoolMonitor } from "./pool-monitor.js";

export const TOPOLOGY_KEY_SUFFIX = "/node";
/** How often Probe's answer, the pools' view (metrics, status) and the pressure levels are refreshed. */
const REFRESH_MS = 5000;
/** A scrape or status call reads the pools again only when their view is older than this. */
const POOL_VIEW_MAX_AGE_MS = 2 * REFRESH_MS;

export class EngineHost implements DriverEngine {
  engine: ThinPoolEngine | undefined;
  readonly store: StateStore;
  readonly runner = new ExecaRunner();
  private readiness: Readiness = {
    ready: false,
    reason: "assembling pools and reconciling the state store with the kernel",
  };
  private timer: NodeJS.Timeout | undefined;
  private monitor: PoolMonitor | undefined;
  private readonly nodeEvents: NodeEvents | undefined;

  constructor(private readonly context: DriverContext) {
    this.store = StateStore.open(join(context.config.stateDir, "state.db"));
    this.nodeEvents = nodeEventsFor(context.config.nodeId, { env: process.env }, context.logger);
  }

  async start(): Promise<void> {
    const { config, logger } = this.context;
    this.engine = await ThinPoolEngine.open({
      store: this.store,
      runner: this.runner,
      logger,
      pools: config.pools.map((pool) => poolSpec(pool, config)),
      capacity: {
        overProvisioningRatio: config.overProvisioningRatio,
        reservedDataPercent: config.reservedDataPercent,
        reservedMetadataPercent: config.reservedMetadataPercent,
      },
      observer: this.context.metrics.engineObserver,
      spareThinIds: config.spareThinIds,
    });
    const engine = this.engine;
    const monitor = new PoolMonitor(engine, config.poolPressure, (change) => {
      void reportPressureChange(change, logger, this.nodeEvents);
    });
    this.monitor = monitor;
    this.context.metrics.attachPools({
      pools: () => monitor.current(POOL_VIEW_MAX_AGE_MS),
      deviceCounts: (pool) => this.deviceCounts(pool),
      spareThinIds: (pool) => engine.readySpareIds(pool),
      overProvisioningRatio: config.overProvisioningRatio,
      thresholds: config.poolPressure,
    });
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), REFRESH_MS);
    this.timer.unref();
  }

  private async refresh(): Promise<void> {
    if (!this.engine) return;
    // A data or metadata device that grew is taken into the pool here (and the pool leaves out-of-space mode).
    await this.engine
      .adoptGrownDevices()
      .catch((err: unknown) =>
        this.context.logger.warn({ err: errorMessage(err) }, "could not reload a pool for its grown devices"),
      );
    try {
      this.readiness = await this.engine.readiness();
    } catch (err) {
      this.readiness = { ready: false, reason: errorMessage(err) };
    }
    // Never rejects: a pool that cannot be read is part of its view.
    await this.monitor?.refresh();
  }

  private deviceCounts(pool: string): Map<string, number> {
    const counts = new Map<string, number>();
    for (const [state, count] of this.store.countByState(pool)) counts.set(state.toLowerCase(), count);
    return counts;
  }

  async status(readiness: Readiness): Promise<NodeStatusReport> {
    const { config, version } = this.context;
    const engine = this.engine;
    const pools = (await this.monitor?.current(POOL_VIEW_MAX_AGE_MS)) ?? [];
    const mapped = engine ? await engine.mappedBytes({ includeInactive: true }) : new Map<string, number>();
    return buildNodeStatus({
      node: config.nodeId,
      driver: config.driverName,
      version,
      now: new Date(),
      readiness,
      pools,
      overProvisioningRatio: config.overProvisioningRatio,
      thresholds: config.poolPressure,
      devices: engine ? this.store.listDevices() : [],
      mappedBytes: mapped,
      quarantinedIds: engine ? engine.poolNames.flatMap((pool) => this.store.listQuarantined(pool)) : [],
      spareThinIds: (pool) => engine?.readySpareIds(pool) ?? 0,
      lastReconcile: engine?.lastReconcile,
      dmNameOf: (device) => engine?.dmNameOf(device) ?? device,
    });
  }

  isReady(): Readiness {
    return this.readiness;
  }

  /** The engine once start-up is done; UNAVAILABLE (retried by the sidecars) until then. */
  require(): ThinPoolEngine {
    if (!this.engine)
      throw new CsiError(
        status.UNAVAILABLE,
        `the driver is starting: ${this.readiness.reason ?? "not ready"}`,
      );
    return this.engine;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.store.close();
  }
}

function poolSpec(pool: PoolConfig, config: DriverConfig): PoolSpec {
  const source = pool.source;
  switch (source.type) {
    case "existing":
      return { name: pool.name, source: { type: "existing", device: source.device } };
    case "devices":
      return {
        name: pool.name,
        source: {
          type: "devices",
          data: source.data,
          metadata: source.metadata,
          blockSizeBytes: source.blockSizeBytes,
        },
      };
    case "loop":
      return {
        name: pool.name,
        source: {
          type: "loop",
          dir: join(config.stateDir, "pools"),
          dataSizeBytes: source.dataSizeBytes,
          metadataSizeBytes: source.metadataSizeBytes,
          blockSizeBytes: source.blockSizeBytes,
        },
      };
  }
}

/** ext4 always; xfs when this node has mkfs.xfs. */
async function availableFilesystems(): Promise<FilesystemType[]> {
  const found = await Promise.all(
    ["/usr/sbin/mkfs.xfs", "/sbin/mkfs.xfs"].map((p) =>
      access(p).then(
        () => true,
        () => false,
      ),
    ),
  );
  return found.some(Boolean) ? ["ext4", "xfs"] : ["ext4"];
}

/**
 * Builds handlers once the engine exists, and answers UNAVAILABLE before. Each method is looked up on
 * every call, so the same map serves before and after start-up.
 */
function deferred<H extends object>(host: EngineHost, build: (engine: ThinPoolEngine) => Promise<H>): H {
  let built: Promise<H> | undefined;
  return new Proxy({} as H, {
    get(_target, method: string) {
      return async (request: unknown, rpc: RpcContext) => {
        const engine = host.require();
        built ??= build(engine);
        const handlers = (await built) as Record<string, (r: unknown, c: RpcContext) => Promise<unknown>>;
        const handler = handlers[method];
        if (!handler) throw new CsiError(status.UNIMPLEMENTED, `${method} is not implemented by this driver`);
        return handler(request, rpc);
      };
    },
    has(_target, method) {
      return typeof method === "string";
    },
  });
}

export const thinpoolDriverFactories: DriverFactories<EngineHost> = {
  createEngine: (context) => new EngineHost(context),
  createControllerHandlers: (host, { config }) =>
    deferred<ControllerHandlers>(host, async (engine) =>
      createControllerService(engine, {
        nodeId: config.nodeId,
        topologyKey: `${config.driverName}${TOPOLOGY_KEY_SUFFIX}`,
        fsTypes: await availableFilesystems(),
        defaultFsType: config.defaultFsType,
        discardOnDelete: config.pools.some((p) => p.source.type === "loop"),
        isInUseOnNode: (device) => host.store.isInUseOnNode(device),
      }),
    ),
  createNodeHandlers: (host, { config }) =>
    deferred<NodeHandlers>(host, async (engine) =>
      createNodeService(engine, host.store, host.runner, {
        nodeId: config.nodeId,
        topologyKey: `${config.driverName}${TOPOLOGY_KEY_SUFFIX}`,
        kubeletDir: config.kubeletDir,
        fsTypes: await availableFilesystems(),
        defaultFsType: config.defaultFsType,
        maxVolumesPerNode: config.maxVolumesPerNode,
      }),
    ),
};
