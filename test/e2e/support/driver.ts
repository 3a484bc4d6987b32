// The real driver, started in the test process inside the VM on a `devices` pool, with its CSI client:
// what the in-VM suites talk to over the socket, as kubelet and the sidecars do.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "pino";

import { CsiClient } from "../../../src/csi/client.js";
import { parseServeArgs } from "../../../src/server/config.js";
import { startDriver, type RunningDriver } from "../../../src/server/driver.js";
import { thinpoolDriverFactories, type EngineHost } from "../../../src/server/engine-wiring.js";
import { createLogger } from "../../../src/server/logger.js";
import { E2E_DATA_DEV, E2E_META_DEV } from "./vm-env.js";

export interface TestDriver {
  dir: string;
  driver: RunningDriver<EngineHost>;
  csi: CsiClient;
  kubelet: string;
  stateDir: string;
  stop(): Promise<void>;
}

export async function startTestDriver(options: {
  /** Defaults: pool "default" on the suite VM's data and metadata disks, node node-a. */
  pool?: string;
  data?: string;
  metadata?: string;
  nodeId?: string;
  /** The directory for the socket, state and kubelet directories; default a fresh temporary one. */
  dir?: string;
  /** A stopped driver whose state and kubelet directories this one takes over (a restart). */
  restartOf?: TestDriver;
  extraArgs?: string[];
  /** Default: silent. */
  logger?: Logger;
}): Promise<TestDriver> {
  const pool = options.pool ?? "default";
  const dir = options.restartOf?.dir ?? options.dir ?? mkdtempSync(join(tmpdir(), `driver-${pool}-`));
  const stateDir = join(dir, "state");
  const kubelet = join(dir, "kubelet");
  mkdirSync(kubelet, { recursive: true });
  const socket = join(dir, "csi.sock");
  const { config } = parseServeArgs(
    [
      "--endpoint",
      `unix://${socket}`,
      "--node-id",
      options.nodeId ?? "node-a",
      "--state-dir",
      stateDir,
      "--kubelet-dir",
      kubelet,
      "--pool",
      `name=${pool},type=devices,data=${options.data ?? E2E_DATA_DEV},metadata=${options.metadata ?? E2E_META_DEV}`,
      "--metrics-address",
      "",
      ...(options.extraArgs ?? []),
    ],
    { env: {} },
  );
  assert.ok(config, "driver configuration is valid");
  const driver = await startDriver(config, thinpoolDriverFactories, {
    handleSignals: false,
    logger: options.logger ?? createLogger({ level: "silent" }),
  });
  await driver.started;
  const csi = new CsiClient(socket);
  return {
    dir,
    driver,
    csi,
    kubelet,
    stateDir,
    async stop() {
      csi.close();
      await driver.server.shutdown();
    },
  };
}
