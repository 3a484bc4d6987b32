/**
 * The whole CSI lifecycle over the real unix socket against the real kernel (runs inside the VM), in
 * the order kubelet and the sidecars use: NodeGetInfo, CreateVolume, NodeStage, NodePublish, write,
 * CreateSnapshot while writing, restore into a larger volume, stage and read it back, expand online,
 * unpublish, unstage, delete in both orders. Every call is repeated to prove idempotency.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import { execa } from "execa";
import type { CsiClient } from "../../../src/csi/client.js";
import type { RunningDriver } from "../../../src/server/driver.js";
import type { EngineHost } from "../../../src/server/engine-wiring.js";
import { startTestDriver } from "../support/driver.js";
import { E2E_META_DEV, removeAllDmDevices, sh, zeroHead } from "../support/vm-env.js";

const MiB = 1024 * 1024;
const engineDevice = (volumeId: string): string => `/dev/mapper/tpcsi-${volumeId.split("@")[0]}`;
const mountCap = {
  access_mode: { mode: "SINGLE_NODE_WRITER" as const },
  mount: { fs_type: "ext4", mount_flags: [] },
};

async function rejects(promise: Promise<unknown>, code: status, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: ServiceError) => {
    assert.equal(err.code, code, `expected ${status[code]}, got ${status[err.code]}: ${err.details}`);
    if (pattern) assert.match(err.details, pattern);
    return true;
  });
}

describe("CSI lifecycle over the socket on a real pool", function () {
  this.timeout(300_000);
  const dir = mkdtempSync(join(tmpdir(), "csi-e2e-"));
  const kubelet = join(dir, "kubelet");
  let driver: RunningDriver<EngineHost>;
  let csi: CsiClient;
  let volumeId = "";
  let snapshotId = "";
  let restoreId = "";
  const stage = (id: string) =>
    join(kubelet, "plugins/kubernetes.io/csi/thinpool.csi.dev", id.slice(0, 26), "globalmount");
  const target = (id: string) =>
    join(kubelet, "pods/pod-1/volumes/kubernetes.io~csi", id.slice(0, 26), "mount");

  before(async () => {
    await removeAllDmDevices();
    await zeroHead(E2E_META_DEV);
    const started = await startTestDriver({ dir });
    driver = started.driver;
    csi = started.csi;
  });

  after(async () => {
    csi?.close();
    await driver?.server.shutdown();
  });

  it("is ready, with the topology segment of this node", async () => {
    const probe = await csi.identity("Probe", {});
    assert.equal(probe.ready?.value, true);
    const info = await csi.node("NodeGetInfo", {});
    assert.equal(info.node_id, "node-a");
    assert.deepEqual(info.accessible_topology?.segments, { "thinpool.csi.dev/node": "node-a" });
  });

  it("creates a volume idempotently and refuses the same name with another size", async () => {
    const request = {
      name: "pvc-1",
      capacity_range: { required_bytes: 64 * MiB },
      volume_capabilities: [mountCap],
      parameters: { "csi.storage.k8s.io/pvc/name": "data" },
    };
    const first = await csi.controller("CreateVolume", request);
    const again = await csi.controller("CreateVolume", request);
    volumeId = first.volume?.volume_id ?? "";
    assert.match(volumeId, /^v-[0-9a-f]{24}@node-a$/);
    assert.equal(again.volume?.volume_id, volumeId);
    assert.equal(first.volume?.capacity_bytes, String(64 * MiB));
    assert.deepEqual(first.volume?.accessible_topology?.[0]?.segments, { "thinpool.csi.dev/node": "node-a" });
    // A larger size is incompatible (a smaller one is compatible: the 64 MiB volume satisfies it).
    await rejects(
      csi.controller("CreateVolume", { ...request, capacity_range: { required_bytes: 128 * MiB } }),
      status.ALREADY_EXISTS,
    );
    await rejects(
      csi.controller("CreateVolume", { ...request, name: "pvc-x", parameters: { colour: "blue" } }),
      status.INVALID_ARGUMENT,
      /unknown parameter\(s\) colour/,
    );
    await rejects(
      csi.controller("CreateVolume", {
        ...request,
        name: "pvc-y",
        volume_capabilities: [{ ...mountCap, access_mode: { mode: "MULTI_NODE_MULTI_WRITER" } }],
      }),
      status.INVALID_ARGUMENT,
    );
  });

  it("stages (mkfs once), publishes and writes; repeated calls are idempotent", async () => {
    const stageReq = {
      volume_id: volumeId,
      staging_target_path: stage(volumeId),
      volume_capability: mountCap,
    };
    await csi.node("NodeStageVolume", stageReq);
    await csi.node("NodeStageVolume", stageReq);
    const pubReq = { ...stageReq, target_path: target(volumeId) };
    await rejects(
      csi.node("NodePublishVolume", { ...pubReq, staging_target_path: join(kubelet, "not-staged") }),
      status.FAILED_PRECONDITION,
    );
    await csi.node("NodePublishVolume", pubReq);
    await csi.node("NodePublishVolume", pubReq);
    await rejects(
      csi.node("NodeStageVolume", {
        ...stageReq,
        volume_capability: { ...mountCap, mount: { fs_type: "ext4", mount_flags: ["noatime"] } },
      }),
      status.ALREADY_EXISTS,
      /other arguments/,
    );
    await rejects(
      csi.node("NodePublishVolume", { ...pubReq, readonly: true }),
      status.ALREADY_EXISTS,
      /other arguments/,
    );
    const roTarget = target(volumeId).replace("pod-1", "pod-ro");
    await csi.node("NodePublishVolume", { ...pubReq, target_path: roTarget, readonly: true });
    assert.throws(
      () => writeFileSync(join(roTarget, "nope"), "x"),
      /EROFS/,
      "a read-only publish is read-only",
    );
    await csi.node("NodeUnpublishVolume", { volume_id: volumeId, target_path: roTarget });
    writeFileSync(join(target(volumeId), "hello.txt"), "written before the snapshot\n");
    await sh("sync", []);
    await rejects(
      csi.node("NodePublishVolume", { ...pubReq, target_path: "/etc/evil" }),
      status.INVALID_ARGUMENT,
      /outside the kubelet directory/,
    );
    const stats = await csi.node("NodeGetVolumeStats", {
      volume_id: volumeId,
      volume_path: target(volumeId),
    });
    assert.equal(stats.volume_condition?.abnormal, false);
    assert.ok(stats.usage.some((u) => u.unit === "BYTES" && Number(u.total) > 50 * MiB));
  });

  it("snapshots while a writer runs and restores into a larger volume that reads back", async () => {
    const writer = execa(
      "sh",
      [
        "-c",
        `while :; do dd if=/dev/zero of=${target(volumeId)}/stream bs=64k count=16 conv=fsync 2>/dev/null; done`,
      ],
      { reject: false },
    );
    await new Promise((r) => setTimeout(r, 1000));
    const snap = await csi.controller("CreateSnapshot", { name: "snap-1", source_volume_id: volumeId });
    writer.kill("SIGKILL");
    await writer;
    snapshotId = snap.snapshot?.snapshot_id ?? "";
    assert.equal(snap.snapshot?.ready_to_use, true);
    assert.equal(
      (await csi.controller("CreateSnapshot", { name: "snap-1", source_volume_id: volumeId })).snapshot
        ?.snapshot_id,
      snapshotId,
    );

    const restore = await csi.controller("CreateVolume", {
      name: "pvc-restore",
      capacity_range: { required_bytes: 128 * MiB },
      volume_capabilities: [mountCap],
      volume_content_source: { snapshot: { snapshot_id: snapshotId } },
    });
    restoreId = restore.volume?.volume_id ?? "";
    assert.equal(restore.volume?.content_source?.snapshot?.snapshot_id, snapshotId);
    await csi.node("NodeStageVolume", {
      volume_id: restoreId,
      staging_target_path: stage(restoreId),
      volume_capability: mountCap,
    });
    assert.equal(readFileSync(join(stage(restoreId), "hello.txt"), "utf8"), "written before the snapshot\n");
    const stats = await csi.node("NodeGetVolumeStats", {
      volume_id: restoreId,
      volume_path: stage(restoreId),
    });
    assert.ok(
      Number(stats.usage.find((u) => u.unit === "BYTES")?.total) > 100 * MiB,
      "filesystem grown to the larger size at first stage",
    );
    await rejects(
      csi.controller("CreateVolume", {
        name: "pvc-small",
        capacity_range: { required_bytes: 16 * MiB, limit_bytes: 16 * MiB },
        volume_capabilities: [mountCap],
        volume_content_source: { snapshot: { snapshot_id: snapshotId } },
      }),
      status.OUT_OF_RANGE,
    );
    await rejects(
      csi.controller("CreateVolume", {
        name: "pvc-elsewhere",
        volume_capabilities: [mountCap],
        volume_content_source: { snapshot: { snapshot_id: snapshotId.replace("@node-a", "@node-b") } },
      }),
      status.RESOURCE_EXHAUSTED,
      /lives on node node-b/,
    );
  });

  it("expands a published volume online", async () => {
    const res = await csi.node("NodeExpandVolume", {
      volume_id: volumeId,
      volume_path: target(volumeId),
      capacity_range: { required_bytes: 96 * MiB },
    });
    assert.equal(res.capacity_bytes, String(96 * MiB));
    const df = await sh("df", ["-B1", "--output=size", target(volumeId)]);
    assert.ok(Number(df.split("\n")[1]) > 80 * MiB, df);
  });

  it("raw block: activated, never formatted, published as a device node that reads back what was written", async () => {
    const blockCap = { access_mode: { mode: "SINGLE_NODE_WRITER" as const }, block: {} };
    const id =
      (
        await csi.controller("CreateVolume", {
          name: "pvc-block",
          capacity_range: { required_bytes: 16 * MiB },
          volume_capabilities: [blockCap],
        })
      ).volume?.volume_id ?? "";
    const stagePath = stage(id);
    const devicePath = join(
      kubelet,
      "plugins/kubernetes.io/csi/volumeDevices/publish",
      id.slice(0, 26),
      "pod-1",
    );
    await csi.node("NodeStageVolume", {
      volume_id: id,
      staging_target_path: stagePath,
      volume_capability: blockCap,
    });
    await csi.node("NodePublishVolume", {
      volume_id: id,
      staging_target_path: stagePath,
      target_path: devicePath,
      volume_capability: blockCap,
    });
    await csi.node("NodePublishVolume", {
      volume_id: id,
      staging_target_path: stagePath,
      target_path: devicePath,
      volume_capability: blockCap,
    });
    await sh("dd", ["if=/dev/urandom", "of=/tmp/block-src", "bs=64k", "count=4"]);
    await sh("dd", ["if=/tmp/block-src", `of=${devicePath}`, "bs=64k", "count=4", "oflag=direct"]);
    const back = await sh("sh", [
      "-c",
      `head -c 262144 ${devicePath} | sha256sum; sha256sum < /tmp/block-src`,
    ]);
    const [a, b] = back.split("\n").map((l) => l.split(" ")[0]);
    assert.equal(a, b);
    await assert.rejects(sh("blkid", ["-p", engineDevice(id)]), "no filesystem was made on a block volume");
    const stats = await csi.node("NodeGetVolumeStats", { volume_id: id, volume_path: devicePath });
    assert.deepEqual(
      stats.usage.map((u) => [u.unit, u.total]),
      [["BYTES", String(16 * MiB)]],
    );
    await csi.node("NodeUnpublishVolume", { volume_id: id, target_path: devicePath });
    await csi.node("NodeUnstageVolume", { volume_id: id, staging_target_path: stagePath });
    await csi.controller("DeleteVolume", { volume_id: id });
  });

  it("xfs: formatted once, and a restore mounts beside its still-mounted origin", async () => {
    const xfsCap = {
      access_mode: { mode: "SINGLE_NODE_WRITER" as const },
      mount: { fs_type: "xfs", mount_flags: [] },
    };
    const id =
      (
        await csi.controller("CreateVolume", {
          name: "pvc-xfs",
          capacity_range: { required_bytes: 320 * MiB },
          volume_capabilities: [xfsCap],
        })
      ).volume?.volume_id ?? "";
    await csi.node("NodeStageVolume", {
      volume_id: id,
      staging_target_path: stage(id),
      volume_capability: xfsCap,
    });
    writeFileSync(join(stage(id), "x.txt"), "xfs data\n");
    await sh("sync", []);
    const snap =
      (await csi.controller("CreateSnapshot", { name: "snap-xfs", source_volume_id: id })).snapshot
        ?.snapshot_id ?? "";
    const rid =
      (
        await csi.controller("CreateVolume", {
          name: "pvc-xfs-restore",
          capacity_range: { required_bytes: 320 * MiB },
          volume_capabilities: [xfsCap],
          volume_content_source: { snapshot: { snapshot_id: snap } },
        })
      ).volume?.volume_id ?? "";
    await csi.node("NodeStageVolume", {
      volume_id: rid,
      staging_target_path: stage(rid),
      volume_capability: xfsCap,
    });
    assert.equal(readFileSync(join(stage(rid), "x.txt"), "utf8"), "xfs data\n");
    assert.match(await sh("findmnt", ["-no", "FSTYPE", stage(rid)]), /xfs/);
    for (const v of [rid, id]) {
      await csi.node("NodeUnstageVolume", { volume_id: v, staging_target_path: stage(v) });
      await csi.controller("DeleteVolume", { volume_id: v });
    }
    await csi.controller("DeleteSnapshot", { snapshot_id: snap });
  });

  it("concurrent calls: one name raced gives one volume; many volumes at once all succeed", async () => {
    const request = {
      name: "pvc-race",
      capacity_range: { required_bytes: 8 * MiB },
      volume_capabilities: [mountCap],
    };
    const raced = await Promise.allSettled(
      Array.from({ length: 5 }, () => csi.controller("CreateVolume", request)),
    );
    const ok = raced.flatMap((r) => (r.status === "fulfilled" ? [r.value.volume?.volume_id] : []));
    const codes = raced.flatMap((r) => (r.status === "rejected" ? [(r.reason as ServiceError).code] : []));
    assert.ok(ok.length >= 1, "at least one create succeeded");
    assert.ok(
      codes.every((c) => c === status.ABORTED),
      `only ABORTED refusals, got ${codes.map((c) => status[c]).join(",")}`,
    );
    assert.equal(new Set(ok).size, 1, "every success names the same volume");
    const raceId = ok[0] as string;

    const many = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        csi.controller("CreateVolume", { ...request, name: `pvc-many-${i}` }),
      ),
    );
    const ids = many.map((m) => m.volume?.volume_id ?? "");
    assert.equal(new Set(ids).size, 10);
    await Promise.all([...ids, raceId].map((volume_id) => csi.controller("DeleteVolume", { volume_id })));
    assert.equal(
      (await sh("dmsetup", ["ls"])).match(/tpcsi-/g)?.length ?? 0,
      2,
      "only the two staged volumes stay active",
    );
  });

  it("refuses to delete a staged volume, then tears down and deletes in both orders", async () => {
    // ListVolumes asks dmsetup about the page's active devices by name (one name alone prints no prefix).
    for (const max_entries of [0, 1]) {
      let token = "";
      do {
        const page = await csi.controller("ListVolumes", { max_entries, starting_token: token });
        for (const entry of page.entries) {
          const condition = entry.status?.volume_condition;
          assert.equal(condition?.abnormal, false, `${entry.volume?.volume_id}: ${condition?.message}`);
        }
        token = page.next_token;
      } while (token);
    }
    await rejects(csi.controller("DeleteVolume", { volume_id: volumeId }), status.FAILED_PRECONDITION);
    for (let i = 0; i < 2; i++) {
      await csi.node("NodeUnpublishVolume", { volume_id: volumeId, target_path: target(volumeId) });
      await csi.node("NodeUnstageVolume", { volume_id: volumeId, staging_target_path: stage(volumeId) });
      await csi.node("NodeUnstageVolume", { volume_id: restoreId, staging_target_path: stage(restoreId) });
    }
    // Volume before its snapshot, and the restore after the snapshot it came from.
    await csi.controller("DeleteVolume", { volume_id: volumeId });
    await csi.controller("DeleteVolume", { volume_id: volumeId });
    const listed = await csi.controller("ListSnapshots", { snapshot_id: snapshotId });
    assert.equal(listed.entries.length, 1, "the snapshot outlives its volume");
    await csi.controller("DeleteSnapshot", { snapshot_id: snapshotId });
    await csi.controller("DeleteSnapshot", { snapshot_id: snapshotId });
    await csi.controller("DeleteVolume", { volume_id: restoreId });
    const volumes = await csi.controller("ListVolumes", {});
    assert.equal(volumes.entries.length, 0);
    assert.equal((await sh("dmsetup", ["ls"])).includes("tpcsi-"), false, "no dm device left behind");
  });
});
