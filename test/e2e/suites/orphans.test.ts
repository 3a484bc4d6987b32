/**
 * `thinpool-csi orphans` against the real driver on a real pool (inside the VM), with the local fake API
 * server standing in for Kubernetes: unreferenced volumes and snapshots are reported and, with --delete,
 * deleted through the driver (their dm devices and pool ids go); a referenced volume stays; an orphan that
 * is still staged is refused by the driver (FAILED_PRECONDITION), stays intact, and the command exits 1.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { main } from "../../../src/cli/main.js";
import type { CsiClient } from "../../../src/csi/client.js";
import type { RunningDriver } from "../../../src/server/driver.js";
import type { EngineHost } from "../../../src/server/engine-wiring.js";
import { FakeKubeApi } from "../../support/fake-kube-api.js";
import { E2E_META_DEV, removeAllDmDevices, sh, zeroHead } from "../support/vm-env.js";
import { startTestDriver } from "../support/driver.js";

const MiB = 1024 * 1024;
const mountCap = {
  access_mode: { mode: "SINGLE_NODE_WRITER" as const },
  mount: { fs_type: "ext4", mount_flags: [] },
};

describe("orphans on a real pool (fake API server)", function () {
  this.timeout(300_000);
  const dir = mkdtempSync(join(tmpdir(), "orphans-e2e-"));
  const kubelet = join(dir, "kubelet");
  const socket = join(dir, "csi.sock");
  let driver: RunningDriver<EngineHost>;
  let csi: CsiClient;
  let api: FakeKubeApi;

  let unstage: (() => Promise<unknown>) | undefined;

  before(async () => {
    // The suite VM has no network; the fake API server needs loopback, which the guest leaves down.
    await sh("ip", ["link", "set", "lo", "up"]);
    await removeAllDmDevices();
    await zeroHead(E2E_META_DEV);
    ({ driver, csi } = await startTestDriver({ dir }));
    api = new FakeKubeApi();
    await api.start();
  });

  after(async () => {
    await unstage?.().catch(() => undefined);
    await api?.stop();
    csi?.close();
    await driver?.server.shutdown();
    await removeAllDmDevices();
  });

  it("reports and deletes unreferenced devices through the driver, keeps referenced and staged ones", async () => {
    const create = async (name: string) =>
      (
        await csi.controller("CreateVolume", {
          name,
          capacity_range: { required_bytes: 32 * MiB },
          volume_capabilities: [mountCap],
        })
      ).volume!.volume_id;
    const kept = await create("kept");
    const lost = await create("lost");
    const staged = await create("staged-orphan");
    const lostSnap = (await csi.controller("CreateSnapshot", { name: "lost-snap", source_volume_id: kept }))
      .snapshot!.snapshot_id;
    const stagePath = join(kubelet, "plugins/kubernetes.io/csi/thinpool.csi.dev/staged/globalmount");
    await csi.node("NodeStageVolume", {
      volume_id: staged,
      staging_target_path: stagePath,
      volume_capability: mountCap,
    });
    const unstageStaged = () =>
      csi.node("NodeUnstageVolume", { volume_id: staged, staging_target_path: stagePath });
    unstage = unstageStaged;
    api.put({
      apiVersion: "v1",
      kind: "PersistentVolume",
      metadata: { name: "pv-kept" },
      spec: { csi: { driver: "thinpool.csi.dev", volumeHandle: kept } },
    });
    const kubeconfig = join(dir, "kubeconfig");
    writeFileSync(kubeconfig, api.kubeconfigYaml());
    const poolDevices = async () => (await sh("dmsetup", ["ls"])).split("\n").map((l) => l.split(/\s+/)[0]);
    assert.ok(
      (await poolDevices()).some((d) => d === `tpcsi-${staged.split("@")[0]}`),
      "the staged orphan is active",
    );

    const out: string[] = [];
    const io = { env: {}, stdout: (t: string) => out.push(t), stderr: (t: string) => out.push(t) };
    const args = [
      "orphans",
      "--endpoint",
      `unix://${socket}`,
      "--kubeconfig",
      kubeconfig,
      "--grace-period",
      "0s",
    ];
    assert.equal(await main([...args, "-o", "json"], io), 0);
    const report = JSON.parse(out.join("")) as { orphans: Array<{ id: string; sizeBytes: number }> };
    assert.deepEqual(report.orphans.map((o) => o.id).sort(), [lost, lostSnap, staged].sort());

    out.length = 0;
    assert.equal(await main([...args, "--delete"], io), 1, "a refused delete makes the command fail");
    const text = out.join("");
    assert.match(text, new RegExp(`deleted ${escape(lost)}`));
    assert.match(text, new RegExp(`deleted ${escape(lostSnap)}`));
    assert.match(text, new RegExp(`delete ${escape(staged)}: FAILED: .*staged or published`));

    const volumes = (await csi.controller("ListVolumes", {})).entries.map((e) => e.volume!.volume_id).sort();
    assert.deepEqual(volumes, [kept, staged].sort());
    assert.deepEqual((await csi.controller("ListSnapshots", {})).entries, []);
    assert.ok(!(await poolDevices()).includes(`tpcsi-${lost.split("@")[0]}`));
    // The staged orphan was not touched: still mounted and writable.
    writeFileSync(join(stagePath, "still-here"), "yes");
    assert.equal(readFileSync(join(stagePath, "still-here"), "utf8"), "yes");
    await unstageStaged();
    unstage = undefined;
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
