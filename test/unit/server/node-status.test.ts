import assert from "node:assert/strict";

import { buildNodeStatus } from "../../../src/server/node-status.js";
import { POOL_VIEW, statusInput } from "./node-status-fixtures.js";

const GiB = 1024 ** 3;

describe("node status report", () => {
  it("lists pools with usage and pressure thresholds", () => {
    const report = buildNodeStatus(statusInput());
    assert.deepEqual(report.pools, [
      {
        name: "default",
        mode: "rw",
        needsCheck: false,
        error: null,
        dataBytes: 2 * GiB,
        dataUsedBytes: 27000 * 65536,
        metadataBytes: 64 * 1024 * 1024,
        metadataUsedBytes: 300 * 4096,
        provisionedBytes: 3 * GiB,
        provisionableBytes: 17 * GiB,
        overProvisioningRatio: 10,
        blockedBy: null,
        spareThinIds: 8,
        pressure: {
          data: { level: "warning", usedPercent: 82.4, warningPercent: 80, criticalPercent: 90 },
          metadata: { level: "normal", usedPercent: 1.8, warningPercent: 80, criticalPercent: 90 },
        },
      },
    ]);
    assert.equal(report.ready, true);
    assert.equal(report.notReadyReason, null);
    assert.equal(report.lastReconcile?.faulty, 2);
    assert.equal(report.generatedAt, "2026-11-23T12:30:00.000Z");
  });

  it("names the PV, PVC, VolumeSnapshotContent and VolumeSnapshot of each device, with used bytes when active", () => {
    const [volume, snapshot] = buildNodeStatus(statusInput()).devices;
    assert.equal(volume?.csiId, "v-000000000000000000000001@worker-1");
    assert.equal(volume?.persistentVolume, "pvc-1111");
    assert.deepEqual(volume?.persistentVolumeClaim, { namespace: "shop", name: "data" });
    assert.equal(volume?.usedBytes, 300 * 1024 * 1024);
    assert.equal(snapshot?.kind, "snapshot");
    assert.equal(snapshot?.persistentVolume, null);
    assert.equal(snapshot?.volumeSnapshotContent, "snapcontent-2222");
    assert.deepEqual(snapshot?.volumeSnapshot, { namespace: "shop", name: "nightly" });
    assert.equal(snapshot?.usedBytes, null, "inactive: no dm device to ask");
    assert.equal(snapshot?.parent, "v-000000000000000000000001");
  });

  it("lists faulty devices with the reason and what to do about it", () => {
    const { faulty } = buildNodeStatus(statusInput());
    assert.equal(faulty.length, 2);
    assert.equal(faulty[0]?.owner, "pv/pvc-3333");
    assert.equal(faulty[0]?.reason, "thin id 3 is missing from the pool's metadata");
    assert.match(
      faulty[0]?.action ?? "",
      /data is lost: restore it from a backup, then delete the PersistentVolume/,
    );
    assert.equal(faulty[1]?.owner, null);
    assert.match(faulty[1]?.action ?? "", /dmsetup info tpcsi-v-000000000000000000000004/);
    assert.match(faulty[1]?.action ?? "", /does not retry a faulty device/);
  });

  it("reports a pool that cannot be read, and not-ready with the reason", () => {
    const report = buildNodeStatus(
      statusInput({
        readiness: { ready: false, reason: "pool default has failed or needs a metadata check" },
        pools: [{ ...POOL_VIEW, status: undefined, usage: undefined, error: "Device tpcsi-pool not found" }],
        lastReconcile: undefined,
      }),
    );
    assert.equal(report.notReadyReason, "pool default has failed or needs a metadata check");
    assert.equal(report.pools[0]?.mode, "unknown");
    assert.equal(report.pools[0]?.error, "Device tpcsi-pool not found");
    assert.equal(report.pools[0]?.dataBytes, null);
    assert.equal(report.lastReconcile, null);
  });
});
