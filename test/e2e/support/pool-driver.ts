/**
 * The real driver in the suite VM, as `thinpool-csi serve` would run it, on a `devices` pool over the
 * suite's data and metadata disks, with a CSI client on its socket. The caller prepares the disks
 * (removeAllDmDevices, zeroHead) and shuts the driver down.
 */
import assert from "node:assert/strict";
import { join } from "node:path";

import { CsiClient } from "../../../src/csi/client.js";
import { parseServeArgs } from "../../../src/server/config.js";
import { startDriver, type RunningDriver } from "../../../src/server/driver.js";
import { thinpoolDriverFactories, type EngineHost } from "../../../src/server/engine-wiring.js";
import { createLogger } from "../../../src/server/logger.js";
import { E2E_DATA_DEV, E2E_META_DEV } from "./vm-env.js";

export interface PoolDriver {
  readonly driver: RunningDriver<EngineHost>;
  readonly csi: CsiClient;
}

export async function startPoolDriver(dir: string, kubelet: string, socket: string): Promise<PoolDriver> {
  const { config } = parseServeArgs(
    [
      ...["--endpoint", `unix://${socket}`, "--node-id", "node-a", "--state-dir", join(dir, "state")],
      ...["--kubelet-dir", kubelet, "--metrics-address", ""],
      ...["--pool", `name=default,type=devices,data=${E2E_DATA_DEV},metadata=${E2E_META_DEV}`],
    ],
    { env: {} },
  );
  assert.ok(config);
  const driver = await startDriver(config, thinpoolDriverFactories, {
    handleSignals: false,
    logger: createLogger({ level: "silent" }),
  });
  await driver.started;
  return { driver, csi: new CsiClient(socket) };
}
