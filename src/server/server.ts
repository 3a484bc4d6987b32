/**
 * The CSI gRPC server: Identity, Controller and Node on one unix socket, through the request pipeline
 * (pipeline.ts) and the `:authority` normalizer (http2-authority.ts).
 *
 * Shutdown (SIGTERM/SIGINT or {@link CsiServer.shutdown}):
 *   1. new calls are refused (UNAVAILABLE on open connections, new connections closed at once; the
 *      socket stays bound meanwhile, so a second driver started on this node refuses to start while
 *      this one still finishes operations),
 *   2. in-flight calls run to their end, up to `shutdownTimeoutMs` (default 60 s),
 *   3. the onShutdown hooks run (the engine closes its store),
 *   4. the socket file is removed.
 * A second signal does not cut an operation short: it is logged and the wait goes on. Only a hard kill
 * (SIGKILL, e.g. after the pod's terminationGracePeriodSeconds) stops an operation halfway, and that is
 * safe by design: the engine records its intent in the store before each kernel call and reconciles
 * it at the next start. The graceful path still waits, so that a normal restart never relies on it.
 */
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { chmodSync, lstatSync, statSync, unlinkSync } from "node:fs";
import { lstat, mkdir, unlink } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { Logger } from "pino";

import { loadCsiServices, type CsiServiceDefinitions } from "../csi/proto.js";
import { SecretRedactor } from "../csi/secrets.js";
import type { ControllerHandlers, IdentityHandlers, NodeHandlers } from "../csi/types.js";
import { errorMessage } from "../util/errors.js";
import { AuthorityNormalizingConnection } from "./http2-authority.js";
import { routeConnection } from "./http2-handshake.js";
import { CONTROLLER_LOCK_KEYS, NODE_LOCK_KEYS, OperationLocks } from "./operation-locks.js";
import { RpcPipeline, type InFlightCall, type RpcObserver } from "./pipeline.js";

export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 60_000;
/** How long the start-up check waits for an existing socket to accept a connection. */
const LIVE_SOCKET_PROBE_MS = 1000;

export interface CsiServerOptions {
  readonly socketPath: string;
  /** Mode of the socket file, e.g. 0o600. */
  readonly socketMode: number;
  readonly logger: Logger;
  readonly identity: IdentityHandlers;
  /** RPCs left out (or the whole service) answer UNIMPLEMENTED. */
  readonly controller?: ControllerHandlers;
  readonly node?: NodeHandlers;
  readonly shutdownTimeoutMs?: number;
  /** How long a new connection may take to send its first request (see http2-handshake.ts). */
  readonly handshakeWaitMs?: number;
  /** Told about every answered call (metrics). */
  readonly rpcObserver?: RpcObserver;
}

export interface ShutdownContext {
  readonly reason: string;
  /** True when in-flight calls were still running at the timeout (they are abandoned, not awaited). */
  readonly timedOut: boolean;
}

export type ShutdownHook = (context: ShutdownContext) => void | Promise<void>;

export interface ShutdownResult {
  readonly timedOut: boolean;
  /** Calls still running when the wait ended. */
  readonly abandonedCalls: readonly InFlightCall[];
}

export class SocketInUseError extends Error {
  override readonly name = "SocketInUseError";
}

export class CsiServer {
  private readonly hooks: ShutdownHook[] = [];
  private shutdownPromise: Promise<ShutdownResult> | undefined;

  private constructor(
    readonly socketPath: string,
    private readonly logger: Logger,
    private readonly grpcServer: Server,
    private readonly netServer: net.Server,
    private readonly pipeline: RpcPipeline,
    /** Accepted client sockets, destroyed at the end of a shutdown. */
    private readonly sockets: ReadonlySet<net.Socket>,
    private readonly socketInode: number,
    private readonly shutdownTimeoutMs: number,
  ) {}

  /** Binds the socket and serves. Rejects when the socket path is held by a live process. */
  static async start(options: CsiServerOptions): Promise<CsiServer> {
    const logger = options.logger;
    const services: CsiServiceDefinitions = loadCsiServices();
    const pipeline = new RpcPipeline({
      logger,
      redactor: new SecretRedactor(),
      locks: new OperationLocks(),
      observer: options.rpcObserver,
    });

    const grpcServer = new Server();
    grpcServer.addService(services.identity, pipeline.implement(services.identity, options.identity));
    grpcServer.addService(
      services.controller,
      pipeline.implement(services.controller, options.controller ?? {}, CONTROLLER_LOCK_KEYS),
    );
    grpcServer.addService(
      services.node,
      pipeline.implement(services.node, options.node ?? {}, NODE_LOCK_KEYS),
    );

    await prepareSocketPath(options.socketPath, logger);

    // grpc-js does not listen itself: connections are accepted here and injected, each either itself or
    // through the :authority normalizer (see http2-handshake.ts and http2-authority.ts for why).
    const injector = grpcServer.createConnectionInjector(ServerCredentials.createInsecure());
    const sockets = new Set<net.Socket>();
    let shuttingDown = (): boolean => false;
    const netServer = net.createServer((socket) => {
      if (shuttingDown()) {
        socket.destroy();
        return;
      }
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      const onProtocolError = (error: Error): void =>
        logger.warn({ err: error }, "closing a connection that sent invalid HTTP/2");
      routeConnection(
        socket,
        {
          // A connection still in its handshake when shutdown began is not handed to a stopped server.
          native: (client) => (shuttingDown() ? client.destroy() : injector.injectConnection(client)),
          normalize: (client, received, settingsAckOwed) => {
            if (shuttingDown()) {
              client.destroy();
              return;
            }
            const connection = new AuthorityNormalizingConnection(
              client,
              received,
              settingsAckOwed,
              (rewrite) =>
                logger.debug(
                  { header: rewrite.header, from: rewrite.from ?? null, to: rewrite.to },
                  "replaced a client :authority that Node's HTTP/2 server would refuse",
                ),
              onProtocolError,
            );
            connection.on("error", (error) => logger.debug({ err: error }, "client connection error"));
            injector.injectConnection(connection);
          },
          protocolError: onProtocolError,
        },
        options.handshakeWaitMs,
      );
    });

    const socketInode = await new Promise<number>((resolve, reject) => {
      netServer.once("error", reject);
      netServer.listen(options.socketPath, () => {
        netServer.removeListener("error", reject);
        try {
          // Synchronously, inside the listening callback: no connection is dispatched before the
          // mode is set. (The window between bind and chmod is covered by the umask of the process.)
          chmodSync(options.socketPath, options.socketMode);
          resolve(statSync(options.socketPath).ino);
        } catch (error) {
          netServer.close();
          reject(error instanceof Error ? error : new Error(String(error)));
        }
      });
    });
    netServer.on("error", (error) => logger.error({ err: error }, "socket listener error"));

    const server = new CsiServer(
      options.socketPath,
      logger,
      grpcServer,
      netServer,
      pipeline,
      sockets,
      socketInode,
      options.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS,
    );
    shuttingDown = () => server.isShuttingDown;
    logger.info(
      { socket: options.socketPath, mode: `0${options.socketMode.toString(8)}` },
      "CSI server listening (Identity, Controller, Node)",
    );
    return server;
  }

  /** Hooks run once, after in-flight calls ended (or the timeout), last registered first. */
  onShutdown(hook: ShutdownHook): void {
    this.hooks.push(hook);
  }

  get isShuttingDown(): boolean {
    return this.shutdownPromise !== undefined;
  }

  inFlightCalls(): InFlightCall[] {
    return this.pipeline.inFlightCalls();
  }

  /** Idempotent: a second call returns the first call's promise. */
  shutdown(reason = "shutdown requested"): Promise<ShutdownResult> {
    this.shutdownPromise ??= this.runShutdown(reason);
    return this.shutdownPromise;
  }

  /**
   * SIGTERM/SIGINT start a graceful shutdown, then call `exit` (0, or 1 when calls were abandoned at
   * the timeout). Returns a function that removes the handlers.
   */
  installSignalHandlers(
    options: { exit?: (code: number) => void; signals?: readonly NodeJS.Signals[] } = {},
  ): () => void {
    const exit = options.exit ?? ((code: number) => process.exit(code));
    const signals = options.signals ?? ["SIGTERM", "SIGINT"];
    const onSignal = (signal: NodeJS.Signals): void => {
      if (!this.isShuttingDown) {
        this.logger.info({ signal }, "signal received: shutting down gracefully");
        void this.shutdown(`received ${signal}`).then(
          (result) => exit(result.timedOut ? 1 : 0),
          (error: unknown) => {
            this.logger.error({ err: error }, "shutdown failed");
            exit(1);
          },
        );
        return;
      }
      const inFlight = this.pipeline.inFlightCalls();
      this.logger.warn(
        { signal, in_flight: inFlight.length, calls: inFlight.map(describeCall) },
        "signal received while already shutting down: still waiting for in-flight calls (operations are never cut short; " +
          "a hard kill is safe because the engine persists its intent before every kernel call)",
      );
    };
    for (const signal of signals) {
      process.on(signal, onSignal);
    }
    return () => {
      for (const signal of signals) {
        process.removeListener(signal, onSignal);
      }
    };
  }

  private async runShutdown(reason: string): Promise<ShutdownResult> {
    const started = Date.now();
    const inFlightAtStart = this.pipeline.inFlightCalls();
    this.logger.info(
      {
        reason,
        in_flight: inFlightAtStart.length,
        calls: inFlightAtStart.map(describeCall),
        timeout_ms: this.shutdownTimeoutMs,
      },
      "shutting down: refusing new calls, waiting for in-flight calls to finish",
    );
    this.pipeline.startDraining();

    // GOAWAY on every connection; grpc-js reports back once their open streams have ended.
    const connectionsClosed = new Promise<void>((resolve) => this.grpcServer.tryShutdown(() => resolve()));
    // Handlers go on after a caller cancels, so their end is awaited separately from the streams'.
    const handlersDone = this.pipeline.whenIdle();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      Promise.all([connectionsClosed, handlersDone]).then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), this.shutdownTimeoutMs);
      }),
    ]);
    clearTimeout(timer);

    const abandonedCalls = this.pipeline.inFlightCalls();
    if (timedOut) {
      this.logger.error(
        {
          in_flight: abandonedCalls.length,
          calls: abandonedCalls.map(describeCall),
          timeout_ms: this.shutdownTimeoutMs,
        },
        "shutdown timeout passed with calls still running: exiting without them (as safe as a crash: the engine reconciles its persisted intent at the next start)",
      );
      this.grpcServer.forceShutdown();
    } else {
      this.logger.info({ waited_ms: Date.now() - started }, "in-flight calls finished");
    }
    for (const socket of this.sockets) {
      socket.destroy();
    }

    const context: ShutdownContext = { reason, timedOut };
    for (const hook of [...this.hooks].reverse()) {
      try {
        await hook(context);
      } catch (error) {
        this.logger.error({ err: error }, "shutdown hook failed");
      }
    }

    await new Promise<void>((resolve) => this.netServer.close(() => resolve()));
    this.removeOwnSocketFile();
    this.logger.info({ socket: this.socketPath, total_ms: Date.now() - started }, "shutdown complete");
    return { timedOut, abandonedCalls };
  }

  /** Node removes the socket when the listener closes; make sure, without touching a successor's socket. */
  private removeOwnSocketFile(): void {
    try {
      const stats = lstatSync(this.socketPath);
      if (stats.isSocket() && stats.ino === this.socketInode) {
        unlinkSync(this.socketPath);
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
        this.logger.warn({ err: error, socket: this.socketPath }, "could not remove the socket file");
      }
    }
  }
}

function describeCall(call: InFlightCall): string {
  const ids = Object.entries(call.fields)
    .map(([name, value]) => `${name}=${value}`)
    .join(" ");
  return `${call.method}${ids === "" ? "" : ` (${ids})`} running for ${Math.round((Date.now() - call.startedAt) / 1000)}s`;
}

/**
 * Makes `socketPath` bindable: creates its directory, removes a stale socket left by a previous run,
 * and refuses when a live process still answers on it (two drivers must never share a node's pool) or
 * when the path is something other than a socket.
 */
export async function prepareSocketPath(socketPath: string, logger: Logger): Promise<void> {
  await mkdir(path.dirname(socketPath), { recursive: true });
  let stats;
  try {
    stats = await lstat(socketPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      return;
    }
    throw error;
  }
  if (!stats.isSocket()) {
    throw new SocketInUseError(`${socketPath} exists and is not a socket; refusing to replace it`);
  }
  if (await socketAnswers(socketPath)) {
    throw new SocketInUseError(
      `another process is serving on ${socketPath}; refusing to start a second driver on the same socket`,
    );
  }
  await unlink(socketPath);
  logger.info({ socket: socketPath }, "removed a stale socket file left by a previous run");
}

function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = net.connect(socketPath);
    const finish = (answer: boolean | Error): void => {
      clearTimeout(timer);
      probe.destroy();
      if (answer instanceof Error) {
        reject(answer);
      } else {
        resolve(answer);
      }
    };
    // No answer in time: treat as live rather than delete a socket someone may be using.
    const timer = setTimeout(() => finish(true), LIVE_SOCKET_PROBE_MS);
    probe.once("connect", () => finish(true));
    probe.once("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNREFUSED" || error.code === "ENOENT") {
        finish(false);
      } else {
        finish(new Error(`cannot check whether ${socketPath} is in use: ${errorMessage(error)}`));
      }
    });
  });
}
