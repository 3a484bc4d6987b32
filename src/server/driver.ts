/**
 * Wiring of one driver process: logger, metrics, engine, services, server, shutdown. The engine and the
 * Controller/Node services come in through {@link DriverFactories}; this file knows nothing about thin
 * pools, so it can be written (and tested) before them.
 *
 * Order at start: create the engine (open the store) -> serve the metrics (--metrics-address) and the
 * admin socket (GET /status, in the state directory) -> build the handlers -> listen (Probe answers
 * "not ready") -> engine.start() in the background (start-up reconciliation), after which the engine's
 * readiness turns Probe to ready. Listening before reconciliation lets kubelet and the sidecars connect
 * and wait on Probe instead of failing to dial.
 */
import type { Logger } from "pino";

import type { ControllerHandlers, NodeHandlers } from "../csi/types.js";
import {
  createIdentityHandlers,
  type Readiness,
  type ReadinessProvider,
} from "../identity/identity-service.js";
import { errorMessage } from "../util/errors.js";
import { readPackageVersion } from "../util/package-info.js";
import type { DriverConfig } from "./config.js";
import { serveHttp, type HttpEndpoint } from "./http-endpoint.js";
import { DriverMetrics } from "./metrics.js";
import { adminSocketPath } from "./node-status.js";
import { createLogger } from "./logger.js";
import { CsiServer } from "./server.js";

/** What the driver needs of the engine (src/thinpool + src/state). */
export interface DriverEngine extends ReadinessProvider {
  /**
   * Start-up work that may take long (reconciliation of persisted intent, pool checks). Runs while the
   * server already answers Probe with not-ready. A rejection keeps the driver not ready (reason
   * logged) rather than exiting, so that the failure is visible through Probe and the logs.
   */
  start?(): Promise<void>;
  /** Called once at shutdown, after in-flight calls ended or the shutdown timeout passed. */
  close(context: { timedOut: boolean }): void | Promise<void>;
  /**
   * What `thinpool-csi status` shows, served as JSON on the admin socket in the state directory.
   * `readiness` is Probe's current answer.
   */
  status?(readiness: Readiness): Promise<object>;
}

export interface DriverContext {
  readonly config: DriverConfig;
  readonly logger: Logger;
  /** The package version, reported as vendor_version. */
  readonly version: string;
  /** The process's Prometheus metrics (served on --metrics-address). */
  readonly metrics: DriverMetrics;
}

export interface DriverFactories<Engine extends DriverEngine> {
  createEngine(context: DriverContext): Engine | Promise<Engine>;
  /** Absent: every Controller RPC answers UNIMPLEMENTED. */
  createControllerHandlers?(engine: Engine, context: DriverContext): ControllerHandlers;
  /** Absent: every Node RPC answers UNIMPLEMENTED. */
  createNodeHandlers?(engine: Engine, context: DriverContext): NodeHandlers;
}

export interface StartDriverOptions {
  /** Default: a JSON logger on stdout at config.logLevel. */
  readonly logger?: Logger;
  /** Default true: SIGTERM/SIGINT shut down gracefully and then exit the process. */
  readonly handleSignals?: boolean;
  /** Called with the exit code after a signal-initiated shutdown; default process.exit. */
  readonly exit?: (code: number) => void;
}

export interface RunningDriver<Engine extends DriverEngine = DriverEngine> {
  readonly server: CsiServer;
  readonly engine: Engine;
  readonly logger: Logger;
  /** Resolves when start-up work (engine.start) has ended, successfully or not. */
  readonly started: Promise<void>;
  /** The metrics endpoint ("host:port"), when metrics are enabled. */
  readonly metricsAddress: string | undefined;
  /** The admin socket serving GET /status, when the engine reports a status. */
  readonly adminSocket: string | undefined;
}

export async function startDriver<Engine extends DriverEngine>(
  config: DriverConfig,
  factories: DriverFactories<Engine>,
  options: StartDriverOptions = {},
): Promise<RunningDriver<Engine>> {
  const logger = options.logger ?? createLogger({ level: config.logLevel, base: { node: config.nodeId } });
  const version = readPackageVersion();
  const metrics = new DriverMetrics({ node: config.nodeId });
  const context: DriverContext = { config, logger, version, metrics };
  logger.info(
    {
      version,
      driver: config.driverName,
      endpoint: config.endpoint,
      state_dir: config.stateDir,
      pools: config.pools.map((pool) => `${pool.name}:${pool.source.type}`),
    },
    "starting thinpool-csi",
  );

  const engine = await factories.createEngine(context);
  let startupError: string | undefined;
  const readiness: ReadinessProvider = {
    isReady: (): Readiness =>
      startupError === undefined
        ? engine.isReady()
        : { ready: false, reason: `start-up failed: ${startupError}` },
  };

  const endpoints: HttpEndpoint[] = [];
  let metricsEndpoint: HttpEndpoint | undefined;
  let adminEndpoint: HttpEndpoint | undefined;
  let server: CsiServer;
  try {
    if (config.metricsAddress !== undefined) {
      metricsEndpoint = await serveHttp(
        config.metricsAddress,
        { "/metrics": () => metrics.exposition() },
        logger,
      );
      endpoints.push(metricsEndpoint);
      logger.info({ address: metricsEndpoint.address }, "serving Prometheus metrics on /metrics");
    }
    if (engine.status !== undefined) {
      const status = engine.status.bind(engine);
      adminEndpoint = await serveHttp(
        { socketPath: adminSocketPath(config.stateDir), socketMode: 0o600 },
        {
          "/status": async () => ({
            contentType: "application/json",
            body: `${JSON.stringify(await status(readiness.isReady()))}\n`,
          }),
        },
        logger,
      );
      endpoints.push(adminEndpoint);
    }
    server = await CsiServer.start({
      socketPath: config.socketPath,
      socketMode: config.socketMode,
      logger,
      shutdownTimeoutMs: config.shutdownTimeoutMs,
      identity: createIdentityHandlers({ driverName: config.driverName, version, readiness, logger }),
      controller: factories.createControllerHandlers?.(engine, context),
      node: factories.createNodeHandlers?.(engine, context),
      rpcObserver: metrics.rpcObserver,
    });
  } catch (error) {
    await Promise.all(endpoints.map((endpoint) => endpoint.close()));
    await engine.close({ timedOut: false });
    throw error;
  }
  server.onShutdown(async ({ timedOut }) => {
    await Promise.all(endpoints.map((endpoint) => endpoint.close()));
    await engine.close({ timedOut });
  });
  if (options.handleSignals ?? true) {
    server.installSignalHandlers(options.exit === undefined ? {} : { exit: options.exit });
  }

  const started = (async () => {
    try {
      await engine.start?.();
      logger.info("start-up work done");
    } catch (error) {
      startupError = errorMessage(error);
      logger.error({ err: error }, "start-up failed: the driver stays not ready");
    }
  })();

  return {
    server,
    engine,
    logger,
    started,
    metricsAddress: metricsEndpoint?.address,
    adminSocket: adminEndpoint?.address,
  };
}
