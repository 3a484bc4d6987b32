import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";

import { CsiError } from "../../../src/csi/errors.js";
import { loadCsiServices } from "../../../src/csi/proto.js";
import type { ControllerHandlers, NodeHandlers } from "../../../src/csi/types.js";
import type { CreateSnapshotResponse__Output } from "../../../src/generated/csi/v1/CreateSnapshotResponse.js";
import { createIdentityHandlers } from "../../../src/identity/identity-service.js";
import { CsiServer, SocketInUseError, type ShutdownContext } from "../../../src/server/server.js";
import {
  captureLogger,
  csiClients,
  deferred,
  expectStatus,
  header,
  http2GrpcCall,
  makeTempDir,
  rawFramesGrpcCall,
  unary,
  waitFor,
  type CapturedLogger,
  type CsiClients,
} from "./helpers.js";

interface Harness {
  readonly server: CsiServer;
  readonly clients: CsiClients;
  readonly log: CapturedLogger;
  readonly socketPath: string;
  readonly dir: string;
}

describe("CsiServer", () => {
  const cleanups: Array<() => void | Promise<unknown>> = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      await cleanup();
    }
  });

  async function startHarness(
    options: {
      controller?: ControllerHandlers;
      node?: NodeHandlers;
      socketMode?: number;
      shutdownTimeoutMs?: number;
      socketName?: string;
      handshakeWaitMs?: number;
    } = {},
  ): Promise<Harness> {
    const { dir, cleanup } = makeTempDir();
    cleanups.push(cleanup);
    const log = captureLogger("debug");
    const socketPath = path.join(dir, options.socketName ?? "csi.sock");
    const server = await CsiServer.start({
      socketPath,
      socketMode: options.socketMode ?? 0o600,
      logger: log.logger,
      identity: createIdentityHandlers({
        driverName: "thinpool.csi.dev",
        version: "1.2.3",
        readiness: { isReady: () => ({ ready: true }) },
        logger: log.logger,
      }),
      controller: options.controller,
      node: options.node,
      // Short, so that a test failing with a call still in flight does not stall the cleanup.
      shutdownTimeoutMs: options.shutdownTimeoutMs ?? 3000,
      handshakeWaitMs: options.handshakeWaitMs,
    });
    cleanups.push(() => server.shutdown("test cleanup"));
    const clients = csiClients(socketPath);
    cleanups.push(() => clients.close());
    return { server, clients, log, socketPath, dir };
  }

  describe("socket", () => {
    it("creates the socket with mode 0600, or the mode configured", async () => {
      const strict = await startHarness();
      assert.ok(lstatSync(strict.socketPath).isSocket());
      assert.equal(statSync(strict.socketPath).mode & 0o777, 0o600);
      const group = await startHarness({ socketMode: 0o660 });
      assert.equal(statSync(group.socketPath).mode & 0o777, 0o660);
    });

    it("creates the socket's directory when it is missing", async () => {
      const harness = await startHarness({ socketName: "plugins/thinpool.csi.dev/csi.sock" });
      assert.ok(lstatSync(harness.socketPath).isSocket());
    });

    it("removes a stale socket left by a killed process and serves on it", async () => {
      const { dir, cleanup } = makeTempDir();
      cleanups.push(cleanup);
      const socketPath = path.join(dir, "csi.sock");
      // A process that dies by SIGKILL while listening leaves its socket file behind.
      spawnSync(process.execPath, [
        "-e",
        `require("net").createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, "SIGKILL"))`,
      ]);
      assert.ok(lstatSync(socketPath).isSocket(), "the stale socket exists before the start");
      const log = captureLogger("info");
      const server = await CsiServer.start({
        socketPath,
        socketMode: 0o600,
        logger: log.logger,
        identity: createIdentityHandlers({
          driverName: "thinpool.csi.dev",
          version: "1",
          readiness: { isReady: () => ({ ready: true }) },
          logger: log.logger,
        }),
      });
      cleanups.push(() => server.shutdown());
      const clients = csiClients(socketPath);
      cleanups.push(() => clients.close());
      const info = await unary<{ name: string }>((cb) => clients.identity.GetPluginInfo({}, cb));
      assert.equal(info.name, "thinpool.csi.dev");
      assert.ok(
        log.lines().some((line) => line.msg === "removed a stale socket file left by a previous run"),
      );
    });

    it("refuses to start when a live process answers on the socket, and leaves that socket alone", async () => {
      const { dir, cleanup } = makeTempDir();
      cleanups.push(cleanup);
      const socketPath = path.join(dir, "csi.sock");
      const other = net.createServer((socket) => socket.end());
      await new Promise<void>((resolve) => other.listen(socketPath, resolve));
      cleanups.push(() => new Promise((resolve) => other.close(resolve)));
      const log = captureLogger("info");
      await assert.rejects(
        CsiServer.start({
          socketPath,
          socketMode: 0o600,
          logger: log.logger,
          identity: createIdentityHandlers({
            driverName: "x.dev",
            version: "1",
            readiness: { isReady: () => ({ ready: true }) },
            logger: log.logger,
          }),
        }),
        (error: unknown) =>
          error instanceof SocketInUseError && /another process is serving/.test(error.message),
      );
      assert.ok(lstatSync(socketPath).isSocket());
    });

    it("refuses to replace a file that is not a socket", async () => {
      const { dir, cleanup } = makeTempDir();
      cleanups.push(cleanup);
      const socketPath = path.join(dir, "csi.sock");
      writeFileSync(socketPath, "not a socket");
      const log = captureLogger("info");
      await assert.rejects(
        CsiServer.start({
          socketPath,
          socketMode: 0o600,
          logger: log.logger,
          identity: createIdentityHandlers({
            driverName: "x.dev",
            version: "1",
            readiness: { isReady: () => ({ ready: true }) },
            logger: log.logger,
          }),
        }),
        /is not a socket/,
      );
      assert.ok(lstatSync(socketPath).isFile());
    });
  });

  describe("error mapping", () => {
    it("passes a CsiError's code and message through unchanged", async () => {
      const { clients } = await startHarness({
        node: {
          NodeUnstageVolume: async () => {
            throw new CsiError(grpc.status.NOT_FOUND, "volume vol-x not found on node n1");
          },
        },
      });
      const error = await expectStatus(
        unary((cb) => clients.node.NodeUnstageVolume({ volume_id: "vol-x", staging_target_path: "/s" }, cb)),
      );
      assert.equal(error.code, grpc.status.NOT_FOUND);
      assert.equal(error.details, "volume vol-x not found on node n1");
    });

    it("turns any other error into INTERNAL with its message but no stack, and logs the stack", async () => {
      const { clients, log } = await startHarness({
        controller: {
          DeleteVolume: async () => {
            throw new Error("dmsetup message pool0 0 delete 7 failed: Device or resource busy");
          },
          DeleteSnapshot: async () => {
            // Not an Error at all.
            throw "just a string";
          },
        },
      });
      const error = await expectStatus(
        unary((cb) => clients.controller.DeleteVolume({ volume_id: "vol-1" }, cb)),
      );
      assert.equal(error.code, grpc.status.INTERNAL);
      assert.match(
        error.details,
        /^DeleteVolume failed: dmsetup message pool0 0 delete 7 failed: Device or resource busy/,
      );
      assert.doesNotMatch(error.details, /\n\s+at /, "no stack trace in the status message");
      const logged = log.lines().find((line) => line.rpc === "DeleteVolume" && line.msg === "rpc failed");
      assert.equal(logged?.level, "error");
      assert.match(String((logged?.err as { stack?: unknown } | undefined)?.stack), /\n\s+at /);

      const other = await expectStatus(
        unary((cb) => clients.controller.DeleteSnapshot({ snapshot_id: "s" }, cb)),
      );
      assert.equal(other.code, grpc.status.INTERNAL);
      assert.match(other.details, /just a string/);
    });

    it("answers UNIMPLEMENTED for RPCs without a handler", async () => {
      const { clients } = await startHarness();
      const error = await expectStatus(unary((cb) => clients.controller.ControllerGetCapabilities({}, cb)));
      assert.equal(error.code, grpc.status.UNIMPLEMENTED);
      assert.match(error.details, /ControllerGetCapabilities is not implemented/);
      const nodeError = await expectStatus(unary((cb) => clients.node.NodeGetInfo({}, cb)));
      assert.equal(nodeError.code, grpc.status.UNIMPLEMENTED);
    });

    it("reports a handler that returns nothing as INTERNAL naming the handler", async () => {
      const { clients } = await startHarness({
        // A handler written wrongly (returns undefined at run time despite its type).
        node: {
          NodeGetCapabilities: (async () => undefined) as unknown as NodeHandlers["NodeGetCapabilities"],
        },
      });
      const error = await expectStatus(unary((cb) => clients.node.NodeGetCapabilities({}, cb)));
      assert.equal(error.code, grpc.status.INTERNAL);
      assert.match(error.details, /NodeGetCapabilities handler returned no response/);
    });
  });

  describe("in-flight operation locks", () => {
    it("answers ABORTED at once to a second call on a volume that has one in flight", async () => {
      const release = deferred();
      let started = 0;
      const { clients } = await startHarness({
        node: {
          NodeStageVolume: async () => {
            started += 1;
            await release.promise;
            return {};
          },
          NodePublishVolume: async () => ({}),
          NodeGetVolumeStats: async () => ({ usage: [] }),
        },
      });
      const first = unary((cb) =>
        clients.node.NodeStageVolume({ volume_id: "vol-1", staging_target_path: "/stage" }, cb),
      );
      await waitFor(() => started === 1, "the first call to start");

      const began = Date.now();
      const second = await expectStatus(
        unary((cb) => clients.node.NodePublishVolume({ volume_id: "vol-1", target_path: "/t" }, cb)),
      );
      assert.equal(second.code, grpc.status.ABORTED);
      assert.equal(second.details, "an operation on volume vol-1 is already in progress");
      assert.ok(Date.now() - began < 1000, "ABORTED comes at once, not after the first call");

      // Another volume, and read-only RPCs on the same one, are not blocked.
      await unary((cb) => clients.node.NodePublishVolume({ volume_id: "vol-2", target_path: "/t" }, cb));
      await unary((cb) => clients.node.NodeGetVolumeStats({ volume_id: "vol-1", volume_path: "/t" }, cb));

      release.resolve();
      await first;
      // Released: the same volume can be used again.
      await unary((cb) => clients.node.NodePublishVolume({ volume_id: "vol-1", target_path: "/t" }, cb));
    });

    it("locks CreateVolume by name and source, and CreateSnapshot by name and source volume", async () => {
      const releaseRestore = deferred();
      const releaseSnapshot = deferred();
      let inFlight = 0;
      const { clients } = await startHarness({
        controller: {
          CreateVolume: async () => {
            inFlight += 1;
            await releaseRestore.promise;
            return { volume: { volume_id: "vol-new", capacity_bytes: "0" } };
          },
          CreateSnapshot: async () => {
            inFlight += 1;
            await releaseSnapshot.promise;
            return { snapshot: { snapshot_id: "snap-2", source_volume_id: "vol-src" } };
          },
          DeleteSnapshot: async () => ({}),
          DeleteVolume: async () => ({}),
        },
      });
      const restore = unary((cb) =>
        clients.controller.CreateVolume(
          { name: "pvc-1", volume_content_source: { snapshot: { snapshot_id: "snap-1" } } },
          cb,
        ),
      );
      const snapshot = unary((cb) =>
        clients.controller.CreateSnapshot({ name: "snap-2", source_volume_id: "vol-src" }, cb),
      );
      await waitFor(() => inFlight === 2, "both calls to start");

      const sameName = await expectStatus(
        unary((cb) => clients.controller.CreateVolume({ name: "pvc-1" }, cb)),
      );
      assert.equal(sameName.code, grpc.status.ABORTED);
      assert.equal(sameName.details, "an operation on volume name pvc-1 is already in progress");

      const deleteRestoreSource = await expectStatus(
        unary((cb) => clients.controller.DeleteSnapshot({ snapshot_id: "snap-1" }, cb)),
      );
      assert.equal(deleteRestoreSource.code, grpc.status.ABORTED);
      assert.equal(deleteRestoreSource.details, "an operation on snapshot snap-1 is already in progress");

      const sameSnapshotName = await expectStatus(
        unary((cb) =>
          clients.controller.CreateSnapshot({ name: "snap-2", source_volume_id: "vol-other" }, cb),
        ),
      );
      assert.equal(sameSnapshotName.details, "an operation on snapshot name snap-2 is already in progress");

      const deleteSnapshotSource = await expectStatus(
        unary((cb) => clients.controller.DeleteVolume({ volume_id: "vol-src" }, cb)),
      );
      assert.equal(deleteSnapshotSource.code, grpc.status.ABORTED);
      assert.equal(deleteSnapshotSource.details, "an operation on volume vol-src is already in progress");

      // Unrelated ids go through.
      await unary((cb) => clients.controller.DeleteSnapshot({ snapshot_id: "snap-other" }, cb));
      await unary((cb) => clients.controller.DeleteVolume({ volume_id: "vol-other" }, cb));
      releaseRestore.resolve();
      releaseSnapshot.resolve();
      await Promise.all([restore, snapshot]);
    });
  });

  describe("logging", () => {
    it("logs method, ids, code and duration, and never a csi_secret field", async () => {
      let secretsSeenByHandler: Record<string, string> | undefined;
      const { clients, log } = await startHarness({
        controller: {
          CreateVolume: async (request) => {
            secretsSeenByHandler = request.secrets;
            return { volume: { volume_id: "vol-9", capacity_bytes: "1048576" } };
          },
        },
        node: {
          NodeStageVolume: async () => {
            throw new CsiError(grpc.status.FAILED_PRECONDITION, "device busy");
          },
        },
      });
      await unary((cb) =>
        clients.controller.CreateVolume(
          { name: "pvc-9", secrets: { password: "hunter2-create" }, parameters: { fsType: "ext4" } },
          cb,
        ),
      );
      await expectStatus(
        unary((cb) =>
          clients.node.NodeStageVolume(
            { volume_id: "vol-9", staging_target_path: "/s", secrets: { token: "hunter2-stage" } },
            cb,
          ),
        ),
      );
      assert.deepEqual(
        secretsSeenByHandler,
        { password: "hunter2-create" },
        "the handler gets the real secrets",
      );
      assert.doesNotMatch(log.text(), /hunter2/);

      const started = log.lines().find((line) => line.rpc === "CreateVolume" && line.msg === "rpc started");
      assert.deepEqual((started?.request as Record<string, unknown>).secrets, "[REDACTED]");
      assert.deepEqual((started?.request as Record<string, unknown>).parameters, { fsType: "ext4" });

      const finished = log.lines().find((line) => line.rpc === "CreateVolume" && line.msg === "rpc finished");
      assert.equal(finished?.level, "info");
      assert.equal(finished?.name, "pvc-9");
      assert.equal(finished?.code, "OK");
      assert.equal(typeof finished?.duration_ms, "number");

      const failed = log.lines().find((line) => line.rpc === "NodeStageVolume" && line.msg === "rpc failed");
      assert.equal(failed?.level, "warn");
      assert.equal(failed?.volume_id, "vol-9");
      assert.equal(failed?.code, "FAILED_PRECONDITION");
      assert.equal(failed?.status_message, "device busy");
    });
  });

  describe(":authority", () => {
    const methodPath = "/csi.v1.Identity/GetPluginInfo";

    it("documents the problem: a bare grpc-js server resets a call whose :authority is the socket path", async () => {
      // If this starts failing, Node/grpc-js became lenient and http2-authority.ts could go.
      const { dir, cleanup } = makeTempDir();
      cleanups.push(cleanup);
      const socketPath = path.join(dir, "bare.sock");
      const bare = new grpc.Server();
      const services = loadCsiServices();
      bare.addService(services.identity, {
        GetPluginInfo: (_call: unknown, callback: grpc.sendUnaryData<unknown>) =>
          callback(null, { name: "bare" }),
      });
      await new Promise<void>((resolve, reject) =>
        bare.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (error) =>
          error === null ? resolve() : reject(error),
        ),
      );
      cleanups.push(() => bare.forceShutdown());
      const accepted = await http2GrpcCall(socketPath, "localhost", methodPath);
      assert.equal(accepted.grpcStatus, "0");
      const refused = await http2GrpcCall(socketPath, socketPath, methodPath);
      assert.equal(refused.resetCode, 1, "PROTOCOL_ERROR");
      assert.equal(refused.grpcStatus, undefined);
      const missing = await rawFramesGrpcCall(socketPath, [
        header(":method", "POST"),
        header(":scheme", "http"),
        header(":path", methodPath),
        header("content-type", "application/grpc"),
      ]);
      assert.equal(missing.resetCode, 1, "no :authority at all: PROTOCOL_ERROR too");
    });

    const grpcCallHeaders = (authority: string) => [
      header(":method", "POST"),
      header(":scheme", "http"),
      header(":path", methodPath),
      header(":authority", authority),
      header("content-type", "application/grpc"),
      header("te", "trailers"),
    ];

    for (const authority of ["localhost", "socket path"])
      it(`answers a client that waits for the server's SETTINGS before its first request, as grpc-go does (:authority ${authority})`, async () => {
        const { socketPath } = await startHarness();
        const result = await rawFramesGrpcCall(
          socketPath,
          grpcCallHeaders(authority === "localhost" ? authority : socketPath),
          { waitForServerSettings: true, calls: 2 },
        );
        // Two calls and no GOAWAY: the session took no ACK it did not ask for.
        assert.deepEqual(
          { answered: result.answered, grpcStatus: result.grpcStatus, goAway: result.goAwayCode },
          { answered: 2, grpcStatus: "0", goAway: undefined },
        );
      });

    for (const acknowledged of [true, false])
      it(`serves a connection that sends no request in time through the normalizer (SETTINGS ${acknowledged ? "acknowledged" : "not yet acknowledged"} by then)`, async () => {
        const { socketPath, log } = await startHarness({ handshakeWaitMs: 100 });
        const connected = Date.now();
        const result = await rawFramesGrpcCall(socketPath, grpcCallHeaders(socketPath), {
          waitForServerSettings: true,
          idleMs: 400,
          ackAfterIdle: !acknowledged,
          calls: 2,
        });
        assert.deepEqual(
          { answered: result.answered, grpcStatus: result.grpcStatus, goAway: result.goAwayCode },
          { answered: 2, grpcStatus: "0", goAway: undefined },
        );
        assert.ok(Date.now() - connected >= 400);
        assert.ok(log.text().includes("replaced a client :authority"), "served through the normalizer");
      });

    for (const form of [
      "localhost",
      "socket path",
      "unix:///socket path",
      "unix:/socket path",
      "percent-encoded path",
    ]) {
      it(`accepts a call whose :authority is ${form}`, async () => {
        const { socketPath } = await startHarness();
        const authority = {
          localhost: "localhost",
          "socket path": socketPath,
          "unix:///socket path": `unix://${socketPath}`,
          "unix:/socket path": `unix:${socketPath}`,
          "percent-encoded path": encodeURIComponent(socketPath),
        }[form] as string;
        const result = await http2GrpcCall(socketPath, authority, methodPath);
        assert.equal(result.resetCode, undefined);
        assert.equal(result.grpcStatus, "0");
        assert.match(result.body.toString("latin1"), /thinpool\.csi\.dev/);
      });
    }

    it("accepts a call without any :authority", async () => {
      const { socketPath } = await startHarness();
      const result = await rawFramesGrpcCall(socketPath, [
        header(":method", "POST"),
        header(":scheme", "http"),
        header(":path", methodPath),
        header("content-type", "application/grpc"),
        header("te", "trailers"),
      ]);
      assert.equal(result.resetCode, undefined);
      assert.equal(result.grpcStatus, "0");
      assert.match(result.body.toString("latin1"), /thinpool\.csi\.dev/);
    });
  });

  describe("graceful shutdown", () => {
    it("refuses new calls, waits for the in-flight one, then runs the hooks and removes the socket", async () => {
      const release = deferred();
      const events: string[] = [];
      let started = false;
      const { server, clients, socketPath, log } = await startHarness({
        controller: {
          CreateSnapshot: async () => {
            started = true;
            await release.promise;
            events.push("handler finished");
            return { snapshot: { snapshot_id: "snap-1", source_volume_id: "vol-1", ready_to_use: true } };
          },
        },
      });
      server.onShutdown(({ timedOut }: ShutdownContext) => {
        events.push(`store closed (timedOut=${timedOut})`);
      });
      const inFlight = unary<CreateSnapshotResponse__Output>((cb) =>
        clients.controller.CreateSnapshot({ name: "snap", source_volume_id: "vol-1" }, cb),
      );
      await waitFor(() => started, "the call to start");

      let shutdownDone = false;
      const shutdown = server.shutdown("test").then((result) => {
        shutdownDone = true;
        return result;
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(shutdownDone, false, "shutdown waits for the in-flight call");
      assert.ok(existsSync(socketPath), "the socket stays until the end");

      // A new call on the open connection is refused.
      const refused = await expectStatus(unary((cb) => clients.identity.GetPluginInfo({}, cb)));
      assert.ok(
        [grpc.status.UNAVAILABLE, grpc.status.CANCELLED].includes(refused.code),
        `got ${refused.code}`,
      );

      release.resolve();
      const response = await inFlight;
      assert.equal(response.snapshot?.snapshot_id, "snap-1", "the in-flight call completed");
      const result = await shutdown;
      assert.deepEqual(result, { timedOut: false, abandonedCalls: [] });
      assert.deepEqual(events, ["handler finished", "store closed (timedOut=false)"]);
      assert.equal(existsSync(socketPath), false, "the socket is removed");
      assert.ok(
        log
          .lines()
          .some(
            (line) =>
              line.msg === "shutting down: refusing new calls, waiting for in-flight calls to finish" &&
              line.in_flight === 1,
          ),
      );
    });

    it("gives up after the timeout, reports the abandoned call and still runs the hooks", async () => {
      const { server, clients } = await startHarness({
        shutdownTimeoutMs: 150,
        node: { NodeExpandVolume: () => new Promise(() => undefined) },
      });
      const contexts: ShutdownContext[] = [];
      server.onShutdown((context) => {
        contexts.push(context);
      });
      const call = unary((cb) =>
        clients.node.NodeExpandVolume({ volume_id: "vol-7", volume_path: "/p" }, cb),
      ).catch(() => undefined);
      await waitFor(() => server.inFlightCalls().length === 1, "the call to start");
      const result = await server.shutdown("test");
      assert.equal(result.timedOut, true);
      assert.deepEqual(
        result.abandonedCalls.map((c) => [c.method, c.fields.volume_id]),
        [["NodeExpandVolume", "vol-7"]],
      );
      assert.deepEqual(
        contexts.map((c) => c.timedOut),
        [true],
      );
      await call;
    });

    it("on SIGTERM shuts down and exits 0; a second signal only logs while the call finishes", async () => {
      const release = deferred();
      let started = false;
      const { server, clients, log } = await startHarness({
        node: {
          NodeUnpublishVolume: async () => {
            started = true;
            await release.promise;
            return {};
          },
        },
      });
      const exits: number[] = [];
      const uninstall = server.installSignalHandlers({ exit: (code) => exits.push(code) });
      cleanups.push(uninstall);
      const call = unary((cb) =>
        clients.node.NodeUnpublishVolume({ volume_id: "vol-3", target_path: "/t" }, cb),
      );
      await waitFor(() => started, "the call to start");

      process.emit("SIGTERM", "SIGTERM");
      await waitFor(() => server.isShuttingDown, "the shutdown to begin");
      process.emit("SIGTERM", "SIGTERM");
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.deepEqual(exits, [], "no exit while the call runs, even after a second signal");
      assert.ok(
        log
          .lines()
          .some(
            (line) =>
              line.level === "warn" &&
              String(line.msg).startsWith("signal received while already shutting down"),
          ),
      );

      release.resolve();
      await call;
      await waitFor(() => exits.length === 1, "the exit");
      assert.deepEqual(exits, [0]);
    });
  });
});
