import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import path from "node:path";

import type { GetPluginCapabilitiesResponse__Output } from "../../../src/generated/csi/v1/GetPluginCapabilitiesResponse.js";
import type { GetPluginInfoResponse__Output } from "../../../src/generated/csi/v1/GetPluginInfoResponse.js";
import type { ProbeResponse__Output } from "../../../src/generated/csi/v1/ProbeResponse.js";
import { createIdentityHandlers, type Readiness } from "../../../src/identity/identity-service.js";
import { CsiServer } from "../../../src/server/server.js";
import { captureLogger, csiClients, makeTempDir, unary, type CsiClients } from "../server/helpers.js";

describe("Identity service (over the socket)", () => {
  let readiness: Readiness | (() => never) = { ready: false, reason: "start-up reconciliation running" };
  let server: CsiServer;
  let clients: CsiClients;
  let cleanup: () => void;
  const log = captureLogger("info");

  before(async () => {
    const temp = makeTempDir();
    cleanup = temp.cleanup;
    const socketPath = path.join(temp.dir, "csi.sock");
    server = await CsiServer.start({
      socketPath,
      socketMode: 0o600,
      logger: log.logger,
      identity: createIdentityHandlers({
        driverName: "thinpool.csi.dev",
        version: "0.1.0",
        readiness: {
          isReady: () => {
            if (typeof readiness === "function") {
              return readiness();
            }
            return readiness;
          },
        },
        logger: log.logger,
      }),
    });
    clients = csiClients(socketPath);
  });

  after(async () => {
    clients.close();
    await server.shutdown();
    cleanup();
  });

  it("GetPluginInfo reports the configured name and the version", async () => {
    const info = await unary<GetPluginInfoResponse__Output>((cb) => clients.identity.GetPluginInfo({}, cb));
    assert.equal(info.name, "thinpool.csi.dev");
    assert.equal(info.vendor_version, "0.1.0");
  });

  it("GetPluginCapabilities: CONTROLLER_SERVICE, VOLUME_ACCESSIBILITY_CONSTRAINTS, expansion ONLINE and OFFLINE", async () => {
    const response = await unary<GetPluginCapabilitiesResponse__Output>((cb) =>
      clients.identity.GetPluginCapabilities({}, cb),
    );
    const described = response.capabilities.map((capability) =>
      capability.type === "service"
        ? `service:${capability.service?.type}`
        : `volume_expansion:${capability.volume_expansion?.type}`,
    );
    assert.deepEqual(described, [
      "service:CONTROLLER_SERVICE",
      "service:VOLUME_ACCESSIBILITY_CONSTRAINTS",
      "volume_expansion:ONLINE",
      "volume_expansion:OFFLINE",
    ]);
  });

  it("Probe answers ready=false until the readiness provider says ready, and false again when it stops", async () => {
    const probe = (): Promise<ProbeResponse__Output> =>
      unary<ProbeResponse__Output>((cb) => clients.identity.Probe({}, cb));
    readiness = { ready: false, reason: "start-up reconciliation running" };
    assert.deepEqual(
      (await probe()).ready,
      { value: false },
      "the field is set, not left out (absent means ready)",
    );
    readiness = { ready: true };
    assert.deepEqual((await probe()).ready, { value: true });
    readiness = { ready: false, reason: "pool pool0 is gone" };
    assert.deepEqual((await probe()).ready, { value: false });

    const changes = log
      .lines()
      .filter((line) => line.msg === "driver is ready" || line.msg === "driver is not ready");
    assert.deepEqual(
      changes.map((line) => line.reason ?? "ready"),
      ["start-up reconciliation running", "ready", "pool pool0 is gone"],
    );
    await probe();
    assert.equal(
      log.lines().filter((line) => line.msg === "driver is not ready").length,
      2,
      "an unchanged readiness is not logged again",
    );
  });

  it("Probe answers not ready (not an error) when the readiness check itself throws", async () => {
    readiness = () => {
      throw new Error("store unreadable");
    };
    const response = await unary<ProbeResponse__Output>((cb) => clients.identity.Probe({}, cb));
    assert.deepEqual(response.ready, { value: false });
    assert.ok(log.lines().some((line) => line.reason === "readiness check failed: store unreadable"));
  });

  it("is served without any Controller or Node handlers; those answer UNIMPLEMENTED", async () => {
    const error = await unary((cb) => clients.controller.ControllerGetCapabilities({}, cb)).catch(
      (e: grpc.ServiceError) => e,
    );
    assert.equal((error as grpc.ServiceError).code, grpc.status.UNIMPLEMENTED);
  });
});
