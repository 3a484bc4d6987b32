/**
 * The orphan report against a real driver (its services on a unix socket over the in-memory dm-thin
 * stand-in) and the local fake API server: what counts as referenced, the grace period for devices that
 * may be being created, deletion only with --delete and only through the driver's socket.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

import { makeKubeClients } from "../../../src/kube/index.js";
import { main } from "../../../src/cli/main.js";
import { findOrphans } from "../../../src/orphans/report.js";
import { FakeKubeApi } from "../../support/fake-kube-api.js";
import { startSocketDriver, type SocketDriver } from "../csi-services/socket-driver.js";

const MiB = 1024 * 1024;
const HOUR_MS = 3_600_000;
const DRIVER = "thinpool.csi.dev";

describe("orphans: thin devices no PV or VolumeSnapshotContent refers to (real services, fake API)", () => {
  let driver: SocketDriver;
  let api: FakeKubeApi;

  beforeEach(async () => {
    driver = await startSocketDriver("node-a");
    api = new FakeKubeApi();
    await api.start();
  });
  afterEach(async () => {
    await driver.close();
    await api.stop();
  });

  const createVolume = async (name: string) =>
    (
      await driver.csi.controller("CreateVolume", {
        name,
        capacity_range: { required_bytes: 8 * MiB },
        volume_capabilities: [
          { access_mode: { mode: "SINGLE_NODE_WRITER" }, mount: { fs_type: "ext4", mount_flags: [] } },
        ],
      })
    ).volume!.volume_id;
  const createSnapshot = async (name: string, source: string) =>
    (await driver.csi.controller("CreateSnapshot", { name, source_volume_id: source })).snapshot!.snapshot_id;
  const pv = (name: string, handle: string, csiDriver = DRIVER) =>
    api.put({
      apiVersion: "v1",
      kind: "PersistentVolume",
      metadata: { name },
      spec: { csi: { driver: csiDriver, volumeHandle: handle } },
    });
  const content = (name: string, handle: string) =>
    api.put({
      apiVersion: "snapshot.storage.k8s.io/v1",
      kind: "VolumeSnapshotContent",
      metadata: { name },
      spec: { driver: DRIVER, source: { volumeHandle: "x" }, deletionPolicy: "Delete" },
      status: { snapshotHandle: handle },
    });
  const deviceIds = async () => [
    ...(await driver.csi.controller("ListVolumes", {})).entries.map((e) => e.volume!.volume_id),
    ...(await driver.csi.controller("ListSnapshots", {})).entries.map((e) => e.snapshot!.snapshot_id),
  ];

  it("reports unreferenced volumes and snapshots past the grace period, with size and age; skips referenced and young ones", async () => {
    const kept = await createVolume("kept");
    const lost = await createVolume("lost");
    const keptSnap = await createSnapshot("kept-snap", kept);
    const lostSnap = await createSnapshot("lost-snap", kept);
    const foreign = await createVolume("foreign");
    pv("pv-kept", kept);
    pv("pv-foreign", foreign, "other.csi.example.com"); // another driver's PV does not count as a reference
    content("content-kept", keptSnap);
    const kube = makeKubeClients(api.kubeConfig());

    // Right after creation every unreferenced device is young: none reported (a create may be in progress).
    const young = await findOrphans({ csi: driver.csi, kube, driverName: DRIVER, graceMs: HOUR_MS });
    assert.deepEqual(young.orphans, []);
    assert.equal(young.tooYoung, 3);
    assert.equal(young.scanned, 5);

    const later = Date.now() + 2 * HOUR_MS;
    const report = await findOrphans({
      csi: driver.csi,
      kube,
      driverName: DRIVER,
      graceMs: HOUR_MS,
      now: () => later,
    });
    assert.deepEqual(report.orphans.map((o) => o.id).sort(), [foreign, lost, lostSnap].sort());
    assert.equal(report.tooYoung, 0);
    for (const orphan of report.orphans) {
      assert.equal(orphan.sizeBytes, 8 * MiB);
      assert.ok(orphan.ageSeconds !== undefined && orphan.ageSeconds >= 2 * 3600 - 5, `age of ${orphan.id}`);
      assert.ok(orphan.createdAt !== undefined);
    }
  });

  it("lists Kubernetes before the devices, so a reference written meanwhile belongs to a device too young to report", async () => {
    await createVolume("v");
    let apiRequestsAtFirstCsiList: number | undefined;
    const csi = new Proxy(driver.csi, {
      get(target, property, receiver) {
        if (property === "controller") {
          return (...args: Parameters<typeof target.controller>) => {
            apiRequestsAtFirstCsiList ??= api.requests.length;
            return target.controller(...args);
          };
        }
        return Reflect.get(target, property, receiver) as unknown;
      },
    });
    await findOrphans({ csi, kube: makeKubeClients(api.kubeConfig()), driverName: DRIVER, graceMs: 0 });
    const before = api.requests.slice(0, apiRequestsAtFirstCsiList).map((r) => r.path);
    assert.ok(before.some((p) => p.endsWith("/persistentvolumes")));
    assert.ok(before.some((p) => p.endsWith("/volumesnapshotcontents")));
  });

  it("the command: lists without deleting, deletes only with --delete and through the driver's socket", async () => {
    const lost = await createVolume("lost");
    const kept = await createVolume("kept");
    pv("pv-kept", kept);
    const kubeconfig = join(driver.dir, "kubeconfig");
    writeFileSync(kubeconfig, api.kubeconfigYaml());
    const out: string[] = [];
    const io = { env: {}, stdout: (t: string) => out.push(t), stderr: (t: string) => out.push(t) };
    const args = [
      "--endpoint",
      `unix://${driver.socketPath}`,
      "--kubeconfig",
      kubeconfig,
      "--grace-period",
      "0s",
    ];

    assert.equal(await main(["orphans", ...args, "-o", "json"], io), 0);
    const report = JSON.parse(out.join("")) as { orphans: Array<{ id: string }>; deleted?: unknown };
    assert.deepEqual(
      report.orphans.map((o) => o.id),
      [lost],
    );
    assert.equal(report.deleted, undefined);
    assert.deepEqual((await deviceIds()).sort(), [kept, lost].sort(), "nothing deleted without --delete");

    out.length = 0;
    assert.equal(await main(["orphans", ...args], io), 0);
    assert.match(out.join(""), /1 orphan\(s\) of 2 device\(s\)/);
    assert.match(out.join(""), /run again with --delete/);

    out.length = 0;
    assert.equal(await main(["orphans", ...args, "--delete"], io), 0);
    assert.match(out.join(""), new RegExp(`deleted ${lost.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
    assert.deepEqual(await deviceIds(), [kept]);
    // The delete went through the driver's engine (journal, locks): the pool got its `delete` message.
    assert.ok(
      driver.kernel.calls.some((c) => c.includes("message") && c.some((a) => a.startsWith("delete "))),
    );
  });

  it("refuses bad flags with a usage error", async () => {
    const out: string[] = [];
    const io = { env: {}, stdout: (t: string) => out.push(t), stderr: (t: string) => out.push(t) };
    assert.equal(await main(["orphans", "-o", "yaml", "--grace-period", "soon"], io), 64);
    assert.match(out.join(""), /--grace-period/);
    assert.match(out.join(""), /text or json/);
  });
});
