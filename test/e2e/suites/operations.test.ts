/**
 * Operations on the real kernel (runs inside the VM): a real driver on the suite disks, scraped on its
 * metrics endpoint and asked with the real `thinpool-csi status` command, every figure checked against
 * what dmsetup says. Pool pressure thresholds are set low (data warning 1 %, critical 2 % of 2 GiB) so a
 * few MiB of writes cross them; the Node Events go to the local fake API server (test/support), started
 * here in the VM and named by KUBECONFIG, as in a cluster. A restart after a staged volume's dm device
 * was removed and a thin id was deleted behind the driver's back checks the reconciliation gauges, the
 * faulty device in `status` and the VolumeConditions.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { pino } from "pino";

import type { NodeStatusReport } from "../../../src/server/node-status.js";
import { StateStore } from "../../../src/state/store.js";
import { RECONCILE_RESULTS } from "../../../src/thinpool/context.js";
import { parsePoolStatus, parseThinStatus, METADATA_BLOCK_BYTES } from "../../../src/thinpool/status.js";
import { FakeKubeApi } from "../../support/fake-kube-api.js";
import { parseExposition, sampleValue, type Sample } from "../../support/prometheus-text.js";
import { repoRoot } from "../../support/repo.js";
import { startTestDriver, type TestDriver } from "../support/driver.js";
import { MiB, waitFor, writeRandom } from "../support/full-pool.js";
import { E2E_DATA_DEV, E2E_META_DEV, removeAllDmDevices, sh, zeroHead } from "../support/vm-env.js";

const POOL = "ops";
const POOL_DM = `thinpool-csi-${POOL}`;
const METRICS_PORT = 19810;
const BLOCK_BYTES = 64 * 1024;
const blockCap = { access_mode: { mode: "SINGLE_NODE_WRITER" as const }, block: {} };
const deviceOf = (id: string): string => id.split("@")[0] as string;
const cli = join(repoRoot, "dist/src/cli/main.js");

async function scrape(): Promise<Sample[]> {
  const response = await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`);
  assert.equal(response.status, 200);
  return parseExposition(await response.text());
}

async function kernelPool() {
  return parsePoolStatus(await sh("dmsetup", ["status", POOL_DM]));
}

async function statusCommand(stateDir: string, ...args: string[]): Promise<string> {
  return (await execa("node", [cli, "status", "--state-dir", stateDir, ...args])).stdout;
}

describe("operations: metrics, pool pressure, status command on a real pool", function () {
  this.timeout(300_000);
  const api = new FakeKubeApi();
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: "info" },
    { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) },
  );
  let d: TestDriver;
  let volume = "";
  let idle = "";
  let snapshot = "";
  const stagePath = (id: string) =>
    join(d.kubelet, "plugins/kubernetes.io/csi/thinpool.csi.dev", id.slice(0, 26), "globalmount");

  const start = async (restartOf?: TestDriver) =>
    startTestDriver({
      pool: POOL,
      data: E2E_DATA_DEV,
      metadata: E2E_META_DEV,
      logger,
      ...(restartOf ? { restartOf } : {}),
      extraArgs: [
        "--metrics-address",
        `127.0.0.1:${METRICS_PORT}`,
        "--pool-data-warning-percent",
        "1",
        "--pool-data-critical-percent",
        "2",
      ],
    });

  before(async () => {
    // The suite VM boots with the loopback interface down; the metrics endpoint and the fake API need it.
    await sh("ip", ["link", "set", "lo", "up"]);
    await removeAllDmDevices();
    await zeroHead(E2E_META_DEV);
    await api.start();
    const kubeconfig = join("/tmp", `operations-kubeconfig-${process.pid}`);
    writeFileSync(kubeconfig, api.kubeconfigYaml());
    process.env.KUBECONFIG = kubeconfig;
    d = await start();
  });

  after(async () => {
    await d?.stop();
    delete process.env.KUBECONFIG;
    await api.stop();
    await removeAllDmDevices();
  });

  it("creates, stages, writes and snapshots through the driver", async () => {
    const create = async (name: string, claim: string) =>
      (
        await d.csi.controller("CreateVolume", {
          name,
          capacity_range: { required_bytes: 256 * MiB },
          volume_capabilities: [blockCap],
          parameters: {
            "csi.storage.k8s.io/pvc/name": claim,
            "csi.storage.k8s.io/pvc/namespace": "shop",
            "csi.storage.k8s.io/pv/name": name,
          },
        })
      ).volume?.volume_id ?? "";
    volume = await create("pvc-ops-1", "data");
    idle = await create("pvc-ops-2", "spare");
    await d.csi.node("NodeStageVolume", {
      volume_id: volume,
      staging_target_path: stagePath(volume),
      volume_capability: blockCap,
    });
    await writeRandom(`/dev/mapper/tpcsi-${deviceOf(volume)}`, 48 * MiB);
    snapshot =
      (
        await d.csi.controller("CreateSnapshot", {
          name: "snapcontent-ops-1",
          source_volume_id: volume,
          parameters: {
            "csi.storage.k8s.io/volumesnapshot/name": "nightly",
            "csi.storage.k8s.io/volumesnapshot/namespace": "shop",
            "csi.storage.k8s.io/volumesnapshotcontent/name": "snapcontent-ops-1",
          },
        })
      ).snapshot?.snapshot_id ?? "";
    await assert.rejects(
      d.csi.controller("CreateVolume", {
        name: "pvc-bad",
        volume_capabilities: [blockCap],
        parameters: { colour: "blue" },
      }),
    );
  });

  it("serves pool metrics equal to dmsetup status, device counts, RPC counts and the snapshot's suspend", async () => {
    const kernel = await kernelPool();
    const node = "node-a";
    const pool = { pool: POOL, node };
    const provisioned = 3 * 256 * MiB;
    // The pools' view is at most one refresh (5 s) old; wait until it has seen the writes and the snapshot
    // (a refresh between the two showed the data with the snapshot not yet provisioned).
    const samples = await waitFor("the metrics to show the data written and the snapshot", async () => {
      const s = await scrape();
      return sampleValue(s, "thinpool_csi_pool_data_used_bytes", pool) ===
        kernel.dataUsedBlocks * BLOCK_BYTES &&
        sampleValue(s, "thinpool_csi_pool_provisioned_bytes", pool) === provisioned
        ? s
        : undefined;
    });
    const figures = {
      data_bytes: sampleValue(samples, "thinpool_csi_pool_data_bytes", pool),
      data_used_bytes: sampleValue(samples, "thinpool_csi_pool_data_used_bytes", pool),
      metadata_bytes: sampleValue(samples, "thinpool_csi_pool_metadata_bytes", pool),
      metadata_used_bytes: sampleValue(samples, "thinpool_csi_pool_metadata_used_bytes", pool),
    };
    console.log(
      `      [operations] ${JSON.stringify({ kernel: await sh("dmsetup", ["status", POOL_DM]), figures })}`,
    );
    assert.equal(figures.data_bytes, kernel.dataTotalBlocks * BLOCK_BYTES);
    assert.equal(figures.metadata_bytes, kernel.metadataTotalBlocks * METADATA_BLOCK_BYTES);
    assert.equal(figures.metadata_used_bytes, kernel.metadataUsedBlocks * METADATA_BLOCK_BYTES);
    assert.ok((figures.data_used_bytes ?? 0) >= 48 * MiB, "the 48 MiB written are allocated");

    assert.equal(sampleValue(samples, "thinpool_csi_pool_provisioned_bytes", pool), provisioned);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_over_provisioning_ratio", pool), 10);
    assert.equal(
      sampleValue(samples, "thinpool_csi_pool_provisionable_bytes", pool),
      10 * kernel.dataTotalBlocks * BLOCK_BYTES - provisioned,
    );
    assert.equal(sampleValue(samples, "thinpool_csi_pool_mode", { ...pool, mode: "rw" }), 1);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_up", pool), 1);
    assert.equal(sampleValue(samples, "thinpool_csi_thin_devices", { ...pool, state: "active" }), 1);
    assert.equal(sampleValue(samples, "thinpool_csi_thin_devices", { ...pool, state: "inactive" }), 2);
    assert.equal(sampleValue(samples, "thinpool_csi_thin_devices", { ...pool, state: "faulty" }), 0);
    assert.equal(
      sampleValue(samples, "thinpool_csi_rpc_requests_total", { method: "CreateVolume", code: "OK" }),
      2,
    );
    assert.equal(
      sampleValue(samples, "thinpool_csi_rpc_errors_total", {
        method: "CreateVolume",
        code: "INVALID_ARGUMENT",
      }),
      1,
    );
    assert.equal(
      sampleValue(samples, "thinpool_csi_rpc_duration_seconds_count", {
        method: "CreateSnapshot",
        code: "OK",
      }),
      1,
    );
    assert.equal(
      sampleValue(samples, "thinpool_csi_origin_suspend_seconds_count", pool),
      1,
      "the staged origin was suspended once",
    );
    assert.equal(
      sampleValue(samples, "thinpool_csi_reconcile_devices", { result: "checked" }),
      0,
      "first start: nothing to check",
    );
    assert.equal(
      sampleValue(samples, "thinpool_csi_pool_pressure_threshold_ratio", {
        resource: "data",
        level: "critical",
      }),
      0.02,
    );
  });

  it("raises data pressure: critical level in the metrics, a warning log line and a Warning Event on the Node", async () => {
    const samples = await scrape();
    assert.equal(
      sampleValue(samples, "thinpool_csi_pool_pressure_level", { pool: POOL, resource: "data" }),
      2,
    );
    assert.equal(
      sampleValue(samples, "thinpool_csi_pool_pressure_level", { pool: POOL, resource: "metadata" }),
      0,
    );
    const event = await waitFor("the Node Event", async () =>
      api.list("Event").find((e) => (e as { reason?: string }).reason === "ThinPoolDataCritical"),
    );
    const { involvedObject, type, message } = event as {
      involvedObject: Record<string, string>;
      type: string;
      message: string;
    };
    assert.deepEqual(involvedObject, { kind: "Node", name: "node-a", uid: "node-a", apiVersion: "v1" });
    assert.equal(type, "Warning");
    assert.match(message, /^thin pool ops: data use \d+\.\d% has reached the critical level of 2%/);
    assert.ok(logs.some((line) => line.reason === "ThinPoolDataCritical" && line.level === 40));
  });

  it("`thinpool-csi status -o json` shows the pool as dmsetup does and every device with its owner", async () => {
    const report = JSON.parse(await statusCommand(d.stateDir, "-o", "json")) as NodeStatusReport;
    const kernel = await kernelPool();
    assert.equal(report.node, "node-a");
    assert.equal(report.ready, true);
    const [pool] = report.pools;
    assert.equal(pool?.name, POOL);
    assert.equal(pool?.mode, "rw");
    assert.equal(pool?.dataBytes, kernel.dataTotalBlocks * BLOCK_BYTES);
    assert.equal(pool?.metadataBytes, kernel.metadataTotalBlocks * METADATA_BLOCK_BYTES);
    assert.equal(pool?.pressure.data.level, "critical");
    assert.equal(pool?.pressure.data.criticalPercent, 2);

    const byId = new Map(report.devices.map((device) => [device.csiId, device]));
    const active = byId.get(volume);
    const mapped =
      parseThinStatus(await sh("dmsetup", ["status", `tpcsi-${deviceOf(volume)}`])).mappedSectors * 512;
    assert.equal(active?.state, "Active");
    assert.equal(active?.usedBytes, mapped);
    assert.ok((active?.usedBytes ?? 0) >= 48 * MiB);
    assert.equal(active?.sizeBytes, 256 * MiB);
    assert.equal(active?.persistentVolume, "pvc-ops-1");
    assert.deepEqual(active?.persistentVolumeClaim, { namespace: "shop", name: "data" });
    assert.equal(byId.get(idle)?.state, "Inactive");
    // Inactive devices are read from the pool's metadata (thin_ls): the idle volume was never written, the
    // snapshot (taken after the 48 MiB were written) maps what its origin mapped then.
    assert.equal(byId.get(idle)?.usedBytes, 0);
    const snap = byId.get(snapshot);
    assert.ok((snap?.usedBytes ?? 0) >= 48 * MiB, `snapshot maps the origin's blocks: ${snap?.usedBytes}`);
    assert.equal(snap?.kind, "snapshot");
    assert.equal(snap?.volumeSnapshotContent, "snapcontent-ops-1");
    assert.deepEqual(snap?.volumeSnapshot, { namespace: "shop", name: "nightly" });
    assert.equal(snap?.parent, deviceOf(volume));
    assert.deepEqual(report.faulty, []);
    assert.equal(report.lastReconcile?.checked, 0);
  });

  it("`thinpool-csi status` prints the same as a table", async () => {
    const text = await statusCommand(d.stateDir);
    console.log(text.replace(/^/gm, "      | "));
    assert.match(text, /^Node node-a: thinpool.csi.dev \S+, ready$/m);
    assert.match(text, /^ops\s+rw\s+\S+\/2GiB \(\d+\.\d%\)\s+\S+\/64MiB/m);
    assert.match(
      text,
      new RegExp(
        `^${deviceOf(volume)}\\s+volume\\s+ops\\s+Active\\s+256MiB\\s+\\S+MiB\\s+pv/pvc-ops-1 \\(pvc shop/data\\)$`,
        "m",
      ),
    );
    assert.match(
      text,
      new RegExp(
        `^${deviceOf(snapshot)}\\s+snapshot\\s+ops\\s+Inactive\\s+256MiB\\s+\\d+MiB\\s+volumesnapshotcontent/snapcontent-ops-1 \\(volumesnapshot shop/nightly\\)$`,
        "m",
      ),
    );
  });

  it("after a restart: the reconciliation gauges, one summary log line, a faulty device with what to do", async () => {
    // Behind the driver's back, while it is stopped: the staged volume's dm device goes (as at a
    // reboot) and the idle volume's thin id is deleted from the pool.
    const missing = await d.csi.controller("ControllerGetVolume", { volume_id: volume });
    assert.equal(missing.status?.volume_condition?.abnormal, false);
    await d.stop();
    await sh("dmsetup", ["remove", `tpcsi-${deviceOf(volume)}`]);
    await assert.rejects(
      statusCommand(d.stateDir),
      /no driver is serving/,
      "no status while the driver is stopped",
    );
    const db = StateStore.open(join(d.stateDir, "state.db"));
    const thinId = db.getDevice(deviceOf(idle))?.deviceId;
    db.close();
    await sh("dmsetup", ["message", POOL_DM, "0", `delete ${thinId}`]);

    logs.length = 0;
    d = await start(d);
    const summaries = logs.filter((line) => line.msg === "start-up reconciliation finished");
    assert.equal(summaries.length, 1, "one summary line");
    const report = summaries[0]?.reconcile as Record<(typeof RECONCILE_RESULTS)[number], number> & {
      durationMs: number;
      phasesMs: Record<string, number>;
    };
    console.log(`      [operations] ${JSON.stringify({ reconcile: report })}`);
    assert.equal(report.checked, 3);
    assert.equal(report.reactivated, 1);
    assert.equal(report.faulty, 1);

    const samples = await scrape();
    for (const result of RECONCILE_RESULTS) {
      assert.equal(
        sampleValue(samples, "thinpool_csi_reconcile_devices", { result }),
        report[result],
        result,
      );
    }
    assert.equal(sampleValue(samples, "thinpool_csi_reconcile_duration_seconds"), report.durationMs / 1000);
    assert.deepEqual(Object.keys(report.phasesMs).sort(), [
      "listing",
      "metadataCheck",
      "reactivation",
      "settling",
    ]);
    for (const [phase, ms] of Object.entries(report.phasesMs))
      assert.equal(sampleValue(samples, "thinpool_csi_reconcile_phase_seconds", { phase }), ms / 1000, phase);
    assert.equal(sampleValue(samples, "thinpool_csi_thin_devices", { pool: POOL, state: "faulty" }), 1);
    assert.equal(sampleValue(samples, "thinpool_csi_thin_devices", { pool: POOL, state: "active" }), 1);

    const status = JSON.parse(await statusCommand(d.stateDir, "-o", "json")) as NodeStatusReport;
    assert.deepEqual(status.lastReconcile, report);
    assert.equal(status.faulty.length, 1);
    assert.equal(status.faulty[0]?.csiId, idle);
    assert.equal(status.faulty[0]?.owner, "pv/pvc-ops-2 (pvc shop/spare)");
    assert.match(status.faulty[0]?.reason ?? "", /missing from the pool's metadata/);
    assert.match(status.faulty[0]?.action ?? "", /data is lost/);
    const text = await statusCommand(d.stateDir);
    assert.match(text, /^FAULTY DEVICES \(1\)$/m);

    const faultyCondition = await d.csi.controller("ControllerGetVolume", { volume_id: idle });
    assert.equal(faultyCondition.status?.volume_condition?.abnormal, true);
    assert.match(faultyCondition.status?.volume_condition?.message ?? "", /faulty: thin id \d+ is missing/);
    const reactivated = await d.csi.controller("ControllerGetVolume", { volume_id: volume });
    assert.deepEqual(reactivated.status?.volume_condition, { abnormal: false, message: "healthy" });
  });

  it("a staged volume whose dm device vanished is abnormal until reactivated", async () => {
    await sh("dmsetup", ["remove", `tpcsi-${deviceOf(volume)}`]);
    const gone = await d.csi.controller("ControllerGetVolume", { volume_id: volume });
    assert.equal(gone.status?.volume_condition?.abnormal, true);
    assert.match(
      gone.status?.volume_condition?.message ?? "",
      /should be active but has no device-mapper device/,
    );
    await d.csi.node("NodeStageVolume", {
      volume_id: volume,
      staging_target_path: stagePath(volume),
      volume_capability: blockCap,
    });
    const back = await d.csi.controller("ControllerGetVolume", { volume_id: volume });
    assert.equal(back.status?.volume_condition?.abnormal, false);
  });

  it("recovers from pressure after deletes: level back to 0 and a Normal Event on the Node", async () => {
    await d.csi.node("NodeUnstageVolume", { volume_id: volume, staging_target_path: stagePath(volume) });
    await d.csi.controller("DeleteSnapshot", { snapshot_id: snapshot });
    await d.csi.controller("DeleteVolume", { volume_id: volume });
    await d.csi.controller("DeleteVolume", { volume_id: idle });
    const kernel = await kernelPool();
    console.log(
      `      [operations] ${JSON.stringify({ afterDeletes: { dataUsedBlocks: kernel.dataUsedBlocks } })}`,
    );
    await waitFor("the pressure level to fall", async () => {
      const level = sampleValue(await scrape(), "thinpool_csi_pool_pressure_level", {
        pool: POOL,
        resource: "data",
      });
      return level === 0 ? level : undefined;
    });
    const recovered = await waitFor("the Normal Event", async () =>
      api.list("Event").find((e) => (e as { reason?: string }).reason === "ThinPoolDataNormal"),
    );
    assert.equal((recovered as { type?: string }).type, "Normal");
  });
});
