/**
 * The driver's Identity, Controller and Node services on a real unix socket, over the engine driving the
 * in-memory dm-thin stand-in, with a real gRPC client: what kubelet and the sidecars (or the `orphans`
 * command) see, minus the kernel.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";

import { createControllerService } from "../../../src/controller/controller-service.js";
import { CsiClient } from "../../../src/csi/client.js";
import { createIdentityHandlers } from "../../../src/identity/identity-service.js";
import { createNodeService } from "../../../src/node/node-service.js";
import { CsiServer } from "../../../src/server/server.js";
import { StateStore } from "../../../src/state/store.js";
import { FakeKernel, openFakeEngine } from "../thinpool/fake-kernel.js";

export const SOCKET_DRIVER_TOPOLOGY_KEY = "thinpool.csi.dev/node";

export interface SocketDriver {
  readonly dir: string;
  readonly kubelet: string;
  readonly socketPath: string;
  readonly server: CsiServer;
  readonly csi: CsiClient;
  readonly store: StateStore;
  readonly kernel: FakeKernel;
  close(): Promise<void>;
}

export async function startSocketDriver(nodeId = "node-a"): Promise<SocketDriver> {
  const dir = mkdtempSync(join(tmpdir(), "tpcsi-services-"));
  const kubelet = join(dir, "kubelet");
  mkdirSync(kubelet);
  const kernel = new FakeKernel();
  const store = StateStore.open(":memory:");
  const engine = await openFakeEngine(kernel, store, {
    capacity: { overProvisioningRatio: 2, reservedDataPercent: 10, reservedMetadataPercent: 10 },
  });
  const logger = pino({ level: "silent" });
  const socketPath = join(dir, "csi.sock");
  const server = await CsiServer.start({
    socketPath,
    socketMode: 0o600,
    logger,
    identity: createIdentityHandlers({
      driverName: "thinpool.csi.dev",
      version: "test",
      readiness: { isReady: () => ({ ready: true }) },
      logger,
    }),
    controller: createControllerService(engine, {
      nodeId,
      topologyKey: SOCKET_DRIVER_TOPOLOGY_KEY,
      fsTypes: ["ext4"],
      defaultFsType: "ext4",
      discardOnDelete: false,
      isInUseOnNode: (device) => store.isInUseOnNode(device),
    }),
    node: createNodeService(engine, store, kernel, {
      nodeId,
      topologyKey: SOCKET_DRIVER_TOPOLOGY_KEY,
      kubeletDir: kubelet,
      fsTypes: ["ext4"],
      defaultFsType: "ext4",
      maxVolumesPerNode: 100,
    }),
  });
  const csi = new CsiClient(socketPath);
  return {
    dir,
    kubelet,
    socketPath,
    server,
    csi,
    store,
    kernel,
    async close() {
      csi.close();
      await server.shutdown();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
