import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import path from "node:path";

import type { ProbeResponse__Output } from "../../../src/generated/csi/v1/ProbeResponse.js";
import type { Readiness } from "../../../src/identity/identity-service.js";
import { parseServeArgs, type DriverConfig } from "../../../src/server/config.js";
import { startDriver, type DriverEngine } from "../../../src/server/driver.js";
import { readPackageVersion } from "../../../src/util/package-info.js";
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
}

function configFor(dir: string): DriverConfig {
  const parsed = parseServeArgs(
    [
      `--endpoint=unix://${path.join(dir, "csi.sock")}`,
      "--pool=name=p,type=existing,device=dm-p",
      `--state-dir=${dir}`,
    ],
    { env: { NODE_NAME: "node-1" } },
  );
  assert.ok(parsed.config !== undefined);
  return parsed.config;
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

  it("stays not ready, with the reason, when engine.start() fails", async () => {
    const { dir, cleanup } = makeTempDir();
    const engine = new FakeEngine();
    engine.startError = new Error("thin-pool device 'dm-p' does not exist");
    const log = captureLogger("info");
    const config = configFor(dir);
    const driver = await startDriver(
      config,
      { createEngine: () => engine },
      { logger: log.logger, handleSignals: false },
    );
    const clients = csiClients(config.socketPath);
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
