/** A node status input with one of each kind of device, for the status report and CLI tests. */
import type { NodeStatusInput } from "../../../src/server/node-status.js";
import type { PoolView } from "../../../src/server/pool-monitor.js";
import { DeviceState, type DeviceRecord } from "../../../src/state/types.js";

const GiB = 1024 ** 3;

export function device(overrides: Partial<DeviceRecord>): DeviceRecord {
  return {
    name: "v-000000000000000000000001",
    pool: "default",
    deviceId: 1,
    kind: "volume",
    sizeBytes: GiB,
    parent: null,
    state: DeviceState.Active,
    pending: null,
    lastError: null,
    requestName: "pvc-1111",
    attributes: {},
    createdAt: "2026-11-23T12:00:00.000Z",
    updatedAt: "2026-11-23T12:00:00.000Z",
    ...overrides,
  };
}

export const POOL_VIEW: PoolView = {
  pool: "default",
  readAt: 0,
  status: {
    healthy: true,
    transactionId: 4n,
    metadataUsedBlocks: 300,
    metadataTotalBlocks: 16384,
    dataUsedBlocks: 27000,
    dataTotalBlocks: 32768,
    mode: "rw",
    discardPassdown: true,
    noSpaceMode: "error_if_no_space",
    needsCheck: false,
  },
  usage: {
    dataBytes: 2 * GiB,
    dataUsedBytes: 27000 * 65536,
    metadataBytes: 64 * 1024 * 1024,
    metadataUsedBytes: 300 * 4096,
    provisionedBytes: 3 * GiB,
    availableBytes: 17 * GiB,
  },
  error: undefined,
  pressure: {
    data: { level: "warning", usedPercent: 82.4 },
    metadata: { level: "normal", usedPercent: 1.8 },
  },
};

export function statusInput(overrides: Partial<NodeStatusInput> = {}): NodeStatusInput {
  return {
    node: "worker-1",
    driver: "thinpool.csi.dev",
    version: "0.1.0",
    now: new Date("2026-11-23T12:30:00Z"),
    readiness: { ready: true },
    pools: [POOL_VIEW],
    overProvisioningRatio: 10,
    thresholds: {
      data: { warningPercent: 80, criticalPercent: 90 },
      metadata: { warningPercent: 80, criticalPercent: 90 },
    },
    devices: [
      device({
        attributes: {
          metadata: {
            "csi.storage.k8s.io/pvc/name": "data",
            "csi.storage.k8s.io/pvc/namespace": "shop",
            "csi.storage.k8s.io/pv/name": "pvc-1111",
          },
        },
      }),
      device({
        name: "s-000000000000000000000002",
        kind: "snapshot",
        deviceId: 2,
        state: DeviceState.Inactive,
        parent: "v-000000000000000000000001",
        requestName: "snapcontent-2222",
        attributes: {
          metadata: {
            "csi.storage.k8s.io/volumesnapshot/name": "nightly",
            "csi.storage.k8s.io/volumesnapshot/namespace": "shop",
          },
        },
      }),
      device({
        name: "v-000000000000000000000003",
        deviceId: 3,
        state: DeviceState.Faulty,
        requestName: "pvc-3333",
        lastError: "thin id 3 is missing from the pool's metadata",
      }),
      device({
        name: "v-000000000000000000000004",
        deviceId: 4,
        state: DeviceState.Faulty,
        requestName: null,
        lastError: "could not be reactivated: device-mapper: reload ioctl failed: No data available",
      }),
    ],
    mappedBytes: new Map([["v-000000000000000000000001", 300 * 1024 * 1024]]),
    quarantinedIds: [
      {
        pool: "default",
        deviceId: 9,
        reason: "found in the pool's metadata but unknown to the store",
        since: "2026-11-23T11:00:00.000Z",
      },
    ],
    spareThinIds: (pool) => (pool === "default" ? 8 : 0),
    lastReconcile: {
      checked: 4,
      reactivated: 1,
      resumed: 0,
      rolledForward: 0,
      rolledBack: 1,
      deactivated: 0,
      quarantined: 1,
      faulty: 2,
      durationMs: 87,
      phasesMs: { listing: 9, settling: 21, reactivation: 50, metadataCheck: 7 },
    },
    dmNameOf: (name) => `tpcsi-${name}`,
    ...overrides,
  };
}
