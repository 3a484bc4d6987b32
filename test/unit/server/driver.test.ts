import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import http from "node:http";
import path from "node:path";

import type { ProbeResponse__Output } from "../../../src/generated/csi/v1/ProbeResponse.js";
import type { Readiness } from "../../../src/identity/identity-service.js";
import { parseServeArgs, type DriverConfig } from "../../../src/server/config.js";
import { startDriver, type DriverEngine } from "../../../src/server/driver.js";
import { readPackageVersion } from "../../../src/util/package-info.js";
import { parseExposition, sampleValue } from "../../support/prometheus-text.js";
import { captureLogger, csiClients, deferred, expectStatus, makeTempDir, unary, waitFor } from "./helpers.js";

class FakeEngine implements DriverEngine {
  readiness: Readiness = { ready: false, reason: "reconciling" };
  readonly startGate = deferred();
  startError: Error | undefined;
  closedWith: Array<{ timedOut: boolean }> = [];

  isReady(): Readiness {
    return this.readiness;
  }

  async start(): Promise<void> {
    await this.startGate.promise;
    if (this.startError !== undefined) {
      throw this.startError;
    }
    this.readiness = { ready: true };
  }

  close(context: { timedOut: boolean }): void {
    this.closedWith.push(context);
  }

  async status(readiness: Readiness): Promise<object> {
    return { node: "node-1", readiness };
  }
}

function httpGet(target: { socketPath: string } | { host: string; port: number }, path: string) {
  return new Promise<{ status: number; contentType: string; body: string }>((resolve, reject) => {
    http
      .get({ ...target, path }, (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => (body += chunk));
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            contentType: String(response.headers["content-type"]),
            body,
          }),
        );
      })
      .on("error", reject);
  });
}

function configFor(dir: string): DriverConfig {
  const parsed = parseServeArgs(
    [
      `--endpoint=unix://${path.join(dir, "csi.sock")}`,
      "--pool=name=p,type=existing,device=dm-p",
      `--state-dir=${dir}`,
      "--metrics-address=",
    ],
    { env: { NODE_NAME: "node-1" } },
  );
  assert.ok(parsed.config !== undefined);
  return parsed.config;
}

/** A driver on the fake engine only (no Controller/Node handlers), and CSI clients of its socket. */
async function startOnEngine(
  config: DriverConfig,
  engine: FakeEngine,
  log: ReturnType<typeof captureLogger>,
) {
  const driver = await startDriver(
    config,
    { createEngine: () => engine },
    { logger: log.logger, handleSignals: false },
  );
  return { driver, clients: csiClients(config.socketPath) };
}

describe("startDriver", () => {
  it("serves Identity at once, turns ready after engine.start(), wires the handlers, closes the engine at shutdown", async () => {
    const { dir, cleanup } = makeTempDir();
    const engine = new FakeEngine();
    const log = captureLogger("info");
    const config = configFor(dir);
    const driver = await startDriver(
      config,
      {
        createEngine: (context) => {
          assert.equal(context.config, config);
          assert.equal(context.version, readPackageVersion());
          return engine;
        },
        createNodeHandlers: (created) => ({
          NodeGetInfo: async () => ({ node_id: created === engine ? "node-1" : "wrong engine" }),
        }),
      },
      { logger: log.logger, handleSignals: false },
    );
    const clients = csiClients(config.socketPath);
    try {
      const probe = (): Promise<ProbeResponse__Output> => unary((cb) => clients.identity.Probe({}, cb));
      assert.deepEqual((await probe()).ready, { value: false }, "not ready while start-up runs");
      const info = await unary<{ node_id: string }>((cb) => clients.node.NodeGetInfo({}, cb));
      assert.equal(info.node_id, "node-1");
      const noController = await expectStatus(
        unary((cb) => clients.controller.ControllerGetCapabilities({}, cb)),
      );
      assert.equal(noController.code, grpc.status.UNIMPLEMENTED);

      engine.startGate.resolve();
      await driver.started;
      assert.deepEqual((await probe()).ready, { value: true });
    } finally {
      clients.close();
      await driver.server.shutdown();
      cleanup();
    }
    assert.deepEqual(engine.closedWith, [{ timedOut: false }]);
  });

  it("serves /metrics (RPC counts by method and code) and the engine's status on the admin socket", async () => {
    const { dir, cleanup } = makeTempDir();
    const engine = new FakeEngine();
    const log = captureLogger("info");
    const config: DriverConfig = { ...configFor(dir), metricsAddress: { host: "127.0.0.1", port: 0 } };
    const { driver, clients } = await startOnEngine(config, engine, log);
    try {
      assert.equal(driver.adminSocket, path.join(dir, "admin.sock"));
      assert.equal(statSync(path.join(dir, "admin.sock")).mode & 0o777, 0o600, "root only");
      const [host, port] = (driver.metricsAddress ?? "").split(":");
      const metricsAt = { host: host ?? "", port: Number(port) };
      await unary((cb) => clients.identity.Probe({}, cb));
      await unary((cb) => clients.identity.Probe({}, cb));
      await expectStatus(unary((cb) => clients.node.NodeGetInfo({}, cb)));

      const scrape = await httpGet(metricsAt, "/metrics");
      assert.equal(scrape.status, 200);
      assert.match(scrape.contentType, /^text\/plain; version=0\.0\.4/);
      const samples = parseExposition(scrape.body);
      const node = "node-1";
      assert.equal(
        sampleValue(samples, "thinpool_csi_rpc_requests_total", { method: "Probe", code: "OK", node }),
        2,
      );
      assert.equal(sampleValue(samples, "thinpool_csi_rpc_errors_total", { method: "Probe" }), undefined);
      assert.equal(
        sampleValue(samples, "thinpool_csi_rpc_errors_total", {
          method: "NodeGetInfo",
          code: "UNIMPLEMENTED",
          node,
        }),
        1,
      );
      assert.equal(
        sampleValue(samples, "thinpool_csi_rpc_duration_seconds_count", {
          method: "Probe",
          code: "OK",
          node,
        }),
        2,
      );
      assert.ok((sampleValue(samples, "thinpool_csi_process_resident_memory_bytes", { node }) ?? 0) > 0);
      assert.equal((await httpGet(metricsAt, "/other")).status, 404);

      const status = await httpGet({ socketPath: path.join(dir, "admin.sock") }, "/status");
      assert.equal(status.status, 200);
      assert.deepEqual(JSON.parse(status.body), {
        node: "node-1",
        readiness: { ready: false, reason: "reconciling" },
      });
    } finally {
      clients.close();
      await driver.server.shutdown();
      cleanup();
    }
    assert.throws(
      () => statSync(path.join(dir, "admin.sock")),
      /ENOENT/,
      "the admin socket is removed at shutdown",
    );
  });

  it("stays not ready, with the reason, when engine.start() fails", async () => {
    const { dir, cleanup } = makeTempDir();
    const engine = new FakeEngine();
    engine.startError = new Error("thin-pool device 'dm-p' does not exist");
    const log = captureLogger("info");
    const config = configFor(dir);
    const { driver, clients } = await startOnEngine(config, engine, log);
    try {
      engine.startGate.resolve();
      await driver.started;
      const probe = await unary<ProbeResponse__Output>((cb) => clients.identity.Probe({}, cb));
      assert.deepEqual(probe.ready, { value: false });
      await waitFor(
        () =>
          log
            .lines()
            .some((line) => line.reason === "start-up failed: thin-pool device 'dm-p' does not exist"),
        "the not-ready reason to be logged",
      );
    } finally {
      clients.close();
      await driver.server.shutdown();
      cleanup();
    }
  });
});
