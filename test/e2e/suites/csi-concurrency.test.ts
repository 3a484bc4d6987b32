/**
 * Concurrency through the CSI socket (issue 5, runs inside the VM): 8 clients at once, each doing what
 * one sidecar or kubelet would, on its own volumes and on volumes and snapshots all of them share:
 * create, stage (mkfs), publish, write, snapshot its own volume and the shared origins, restore,
 * expand, stats, list, unpublish, unstage, delete; and the same CreateVolume / CreateSnapshot name raced
 * by every client. A call answered ABORTED (another operation holds the volume) is retried after a short
 * wait, as the sidecars and kubelet do, and counted; any other refusal fails the test. Afterwards a
 * checker compares the store with the kernel and the mount table, and every restore of a shared origin
 * must hold the origin's file.
 *
 * Figures (one line on stdout): clients, calls, ABORTED answers, inconsistencies.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { status, type ServiceError } from "@grpc/grpc-js";
import type { CsiClient } from "../../../src/csi/client.js";
import { storeKernelProblems } from "../support/consistency.js";
import { startTestDriver, type TestDriver } from "../support/driver.js";
import { E2E_META_DEV, removeAllDmDevices, sh, sha256File, zeroHead } from "../support/vm-env.js";

const MiB = 1024 * 1024;
const CLIENTS = 8;
const ROUNDS = 1;
const mountCap = {
  access_mode: { mode: "SINGLE_NODE_WRITER" as const },
  mount: { fs_type: "ext4", mount_flags: [] },
};

describe("CSI calls from many clients at once on a real pool", function () {
  this.timeout(900_000);
  const dir = mkdtempSync(join(tmpdir(), "csi-conc-"));
  let d: TestDriver;
  let calls = 0;
  let aborted = 0;
  const stagePath = (id: string) =>
    join(d.kubelet, "plugins/kubernetes.io/csi/thinpool.csi.dev", id.slice(0, 26), "globalmount");
  const targetPath = (id: string, pod: string) =>
    join(d.kubelet, "pods", pod, "volumes/kubernetes.io~csi", id.slice(0, 26), "mount");

  /** One call, retried while it answers ABORTED (the sidecars retry with backoff; so does this). */
  async function call<T>(make: (csi: CsiClient) => Promise<T>): Promise<T> {
    for (;;) {
      calls++;
      try {
        return await make(d.csi);
      } catch (err) {
        if ((err as ServiceError).code !== status.ABORTED) throw err;
        aborted++;
        await new Promise((r) => setTimeout(r, 20 + Math.random() * 80));
      }
    }
  }

  const createVolume = async (name: string, source?: { snapshot?: string; volume?: string }) => {
    const res = await call((csi) =>
      csi.controller("CreateVolume", {
        name,
        capacity_range: { required_bytes: 16 * MiB },
        volume_capabilities: [mountCap],
        ...(source?.snapshot
          ? { volume_content_source: { snapshot: { snapshot_id: source.snapshot } } }
          : {}),
        ...(source?.volume ? { volume_content_source: { volume: { volume_id: source.volume } } } : {}),
      }),
    );
    return res.volume?.volume_id ?? assert.fail(`CreateVolume ${name} returned no id`);
  };
  const createSnapshot = async (name: string, source: string) => {
    const res = await call((csi) => csi.controller("CreateSnapshot", { name, source_volume_id: source }));
    return res.snapshot?.snapshot_id ?? assert.fail(`CreateSnapshot ${name} returned no id`);
  };
  const stage = async (id: string) => {
    mkdirSync(stagePath(id), { recursive: true });
    await call((csi) =>
      csi.node("NodeStageVolume", {
        volume_id: id,
        staging_target_path: stagePath(id),
        volume_capability: mountCap,
      }),
    );
    return stagePath(id);
  };
  const unstage = (id: string) =>
    call((csi) => csi.node("NodeUnstageVolume", { volume_id: id, staging_target_path: stagePath(id) }));
  const deleteVolume = (id: string) => call((csi) => csi.controller("DeleteVolume", { volume_id: id }));
  const deleteSnapshot = (id: string) => call((csi) => csi.controller("DeleteSnapshot", { snapshot_id: id }));

  const origins: { id: string; sum: string }[] = [];

  before(async () => {
    await removeAllDmDevices();
    await zeroHead(E2E_META_DEV);
    d = await startTestDriver({ dir });
    for (let i = 0; i < 3; i++) {
      const id = await createVolume(`origin-${i}`);
      const file = join(await stage(id), "data");
      writeFileSync(file, randomBytes(2 * MiB));
      await sh("sync", ["-f", file]);
      origins.push({ id, sum: await sha256File(file) });
    }
  });

  after(async () => {
    // The origins stay staged through the test; unmount them so the next suite can remove every device.
    for (const o of origins) await unstage(o.id).catch(() => undefined);
    await d?.stop();
    await removeAllDmDevices().catch(() => undefined);
  });

  it("runs 8 clients of mixed calls on shared and own volumes; store, kernel and data agree", async () => {
    const restoresChecked: string[] = [];
    const racedIds = new Set<string>();
    const client = async (c: number) => {
      for (let r = 0; r < ROUNDS; r++) {
        const origin = origins[(c + r) % origins.length] as { id: string; sum: string };
        // Own volume: the whole life of a PVC used by one pod.
        const own = await createVolume(`c${c}-r${r}-own`);
        const staged = await stage(own);
        const target = targetPath(own, `pod-${c}-${r}`);
        await call((csi) =>
          csi.node("NodePublishVolume", {
            volume_id: own,
            staging_target_path: staged,
            target_path: target,
            volume_capability: mountCap,
          }),
        );
        writeFileSync(join(target, "own"), randomBytes(MiB));
        const ownSnapshot = await createSnapshot(`c${c}-r${r}-own-snap`, own);
        await call((csi) =>
          csi.node("NodeExpandVolume", {
            volume_id: own,
            volume_path: target,
            capacity_range: { required_bytes: 24 * MiB },
          }),
        );
        await call((csi) => csi.node("NodeGetVolumeStats", { volume_id: own, volume_path: target }));

        // Shared: snapshot an origin every client uses, restore it, read the origin's file back.
        const shared = await createSnapshot(`c${c}-r${r}-shared-snap`, origin.id);
        const restore = await createVolume(`c${c}-r${r}-restore`, { snapshot: shared });
        const restored = await sha256File(join(await stage(restore), "data"));
        assert.equal(restored, origin.sum, `restore of ${origin.id} holds its file`);
        restoresChecked.push(restore);
        const clone = await createVolume(`c${c}-r${r}-clone`, { volume: origin.id });
        await call((csi) => csi.controller("ControllerGetVolume", { volume_id: origin.id }));
        await call((csi) => csi.controller("ListSnapshots", { source_volume_id: origin.id }));
        await call((csi) => csi.controller("ListVolumes", { max_entries: 5 }));
        await call((csi) => csi.controller("GetCapacity", {}));

        // The same names raced by every client: one volume and one snapshot, the same ids for all.
        const raced = await createVolume(`raced-${r}`);
        racedIds.add(`raced-${r}=${raced}`);
        racedIds.add(`raced-snap-${r}=${await createSnapshot(`raced-snap-${r}`, raced)}`);

        // Tear down what is its own, in the order kubelet and the sidecars use.
        await call((csi) => csi.node("NodeUnpublishVolume", { volume_id: own, target_path: target }));
        await unstage(own);
        await unstage(restore);
        await deleteSnapshot(ownSnapshot);
        await deleteVolume(own);
        await deleteVolume(restore);
        await deleteVolume(clone);
        await deleteSnapshot(shared);
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));

    const problems = await storeKernelProblems({
      statePath: join(d.stateDir, "state.db"),
      pool: "default",
      metadataDevice: E2E_META_DEV,
    });
    for (const o of origins)
      if ((await sha256File(join(stagePath(o.id), "data"))) !== o.sum) problems.push(`${o.id}: data changed`);
    if (racedIds.size !== 2 * ROUNDS)
      problems.push(`raced names got several ids: ${[...racedIds].join(", ")}`);
    const devices = d.driver.engine.engine?.listDevices() ?? [];
    // Left: 3 origins, and per round one raced volume and one raced snapshot.
    const expected = origins.length + 2 * ROUNDS;
    if (devices.length !== expected)
      problems.push(`${devices.length} devices left, expected ${expected}: ${devices.map((x) => x.name)}`);
    process.stdout.write(
      `      csi-concurrency: ${CLIENTS} clients, ${calls} calls, ${aborted} ABORTED, ${restoresChecked.length} restores verified, ${problems.length} inconsistencies\n`,
    );
    assert.deepEqual(problems, [], "store, kernel, mounts and data agree");
  });
});
