/**
 * The Controller and Node services over a real unix socket with a real gRPC client, on the engine driving
 * the in-memory dm-thin stand-in. Covers every RPC and the error codes the CSI spec assigns; what needs a
 * real kernel (mkfs, mounts, data) is covered by test/e2e/suites/csi-lifecycle.test.ts in the VM.
 */
import assert from "node:assert/strict";
import { symlinkSync } from "node:fs";
import { join } from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import { makeId } from "../../../src/controller/ids.js";
import type { CsiClient } from "../../../src/csi/client.js";
import type { StateStore } from "../../../src/state/store.js";
import type { FakeKernel } from "../thinpool/fake-kernel.js";
import { SOCKET_DRIVER_TOPOLOGY_KEY, startSocketDriver, type SocketDriver } from "./socket-driver.js";

const MiB = 1024 * 1024;
const TOPOLOGY_KEY = SOCKET_DRIVER_TOPOLOGY_KEY;
const mountCap = {
  access_mode: { mode: "SINGLE_NODE_WRITER" as const },
  mount: { fs_type: "ext4", mount_flags: [] },
};
const blockCap = { access_mode: { mode: "SINGLE_NODE_WRITER" as const }, block: {} };

async function rejects(promise: Promise<unknown>, code: status, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: ServiceError) => {
    assert.equal(status[err.code], status[code], err.details);
    if (pattern) assert.match(err.details, pattern);
    return true;
  });
}

describe("CSI Controller and Node services over the socket (fake kernel)", function () {
  this.timeout(20_000);
  let kubelet: string;
  let csi: CsiClient;
  let store: StateStore;
  let kernel: FakeKernel;

  let driver: SocketDriver;

  beforeEach(async () => {
    driver = await startSocketDriver();
    ({ kubelet, csi, store, kernel } = driver);
  });

  afterEach(() => driver.close());

  const createVolume = (name: string, bytes = 8 * MiB, extra: Record<string, unknown> = {}) =>
    csi.controller("CreateVolume", {
      name,
      capacity_range: { required_bytes: bytes },
      volume_capabilities: [mountCap],
      ...extra,
    });

  describe("Controller", () => {
    it("advertises exactly the controller capabilities, without EXPAND_VOLUME", async () => {
      const caps = (await csi.controller("ControllerGetCapabilities", {})).capabilities.map(
        (c) => c.rpc?.type,
      );
      assert.deepEqual(caps.sort(), [
        "CLONE_VOLUME",
        "CREATE_DELETE_SNAPSHOT",
        "CREATE_DELETE_VOLUME",
        "GET_CAPACITY",
        "GET_SNAPSHOT",
        "GET_VOLUME",
        "LIST_SNAPSHOTS",
        "LIST_VOLUMES",
        "SINGLE_NODE_MULTI_WRITER",
        "VOLUME_CONDITION",
      ]);
    });

    it("CreateVolume: rounds up to the pool block and reports the exact size, topology and context", async () => {
      const res = await createVolume("pvc-1", 10 * MiB + 1);
      assert.equal(res.volume?.capacity_bytes, String(10 * MiB + 64 * 1024));
      assert.deepEqual(res.volume?.accessible_topology?.[0]?.segments, { [TOPOLOGY_KEY]: "node-a" });
      assert.equal(res.volume?.volume_context?.fsType, "ext4");
      assert.equal(res.volume?.content_source, null);
    });

    it("CreateVolume: the request's errors get the codes the spec names", async () => {
      await rejects(createVolume(""), status.INVALID_ARGUMENT, /name is required/);
      await rejects(
        csi.controller("CreateVolume", { name: "x", volume_capabilities: [] }),
        status.INVALID_ARGUMENT,
        /volume_capabilities is required/,
      );
      await rejects(
        createVolume("x", 8 * MiB, { capacity_range: { required_bytes: 8 * MiB, limit_bytes: MiB } }),
        status.INVALID_ARGUMENT,
        /exceeds limit_bytes/,
      );
      await rejects(
        createVolume("x", 8 * MiB, { capacity_range: { required_bytes: MiB + 1, limit_bytes: MiB + 1 } }),
        status.OUT_OF_RANGE,
        /above limit_bytes/,
      );
      await rejects(
        createVolume("x", 8 * MiB, { capacity_range: { required_bytes: -5 } }),
        status.INVALID_ARGUMENT,
        /non-negative/,
      );
      await rejects(
        createVolume("x", 8 * MiB, { parameters: { colour: "blue", size: "9" } }),
        status.INVALID_ARGUMENT,
        /unknown parameter\(s\) colour, size/,
      );
      await rejects(
        createVolume("x", 8 * MiB, { parameters: { pool: "nope" } }),
        status.INVALID_ARGUMENT,
        /names no pool/,
      );
      for (const mode of [
        "MULTI_NODE_MULTI_WRITER",
        "MULTI_NODE_READER_ONLY",
        "MULTI_NODE_SINGLE_WRITER",
      ] as const) {
        await rejects(
          createVolume("x", 8 * MiB, { volume_capabilities: [{ ...mountCap, access_mode: { mode } }] }),
          status.INVALID_ARGUMENT,
          /local to one node/,
        );
      }
      await rejects(
        createVolume("x", 8 * MiB, {
          volume_capabilities: [{ ...mountCap, mount: { fs_type: "btrfs", mount_flags: [] } }],
        }),
        status.INVALID_ARGUMENT,
        /fs type 'btrfs' is not supported/,
      );
      await rejects(
        createVolume("x", 8 * MiB, {
          accessibility_requirements: { requisite: [{ segments: { [TOPOLOGY_KEY]: "node-b" } }] },
        }),
        status.RESOURCE_EXHAUSTED,
        /only node\(s\) node-b/,
      );
      assert.equal(store.listDevices().length, 0, "no refused request created anything");
    });

    it("CreateVolume: idempotent by name; different arguments are ALREADY_EXISTS", async () => {
      const a = await createVolume("pvc-1");
      const b = await createVolume("pvc-1");
      assert.equal(a.volume?.volume_id, b.volume?.volume_id);
      await rejects(createVolume("pvc-1", 16 * MiB), status.ALREADY_EXISTS);
      await rejects(
        createVolume("pvc-1", 8 * MiB, { volume_capabilities: [blockCap] }),
        status.ALREADY_EXISTS,
      );
      await rejects(
        createVolume("pvc-1", 8 * MiB, { parameters: { mkfsOptions: "-T news" } }),
        status.ALREADY_EXISTS,
      );
      // Sidecar metadata may differ between retries (it is not an argument of the volume).
      await createVolume("pvc-1", 8 * MiB, { parameters: { "csi.storage.k8s.io/pvc/name": "data" } });
    });

    it("CreateVolume: past the over-provisioning ratio is RESOURCE_EXHAUSTED with the numbers", async () => {
      // 1GiB pool, ratio 2.
      await createVolume("big", 1536 * MiB);
      await rejects(createVolume("more", 1024 * MiB), status.RESOURCE_EXHAUSTED, /over-provisioning limit/);
      const capacity = await csi.controller("GetCapacity", {});
      assert.equal(capacity.available_capacity, String(512 * MiB));
      assert.equal(capacity.maximum_volume_size?.value, String(512 * MiB));
      assert.equal(capacity.minimum_volume_size?.value, String(64 * 1024));
    });

    it("GetCapacity: zero for another node's segment, an unknown pool or an unsupported capability", async () => {
      const other = await csi.controller("GetCapacity", {
        accessible_topology: { segments: { [TOPOLOGY_KEY]: "node-b" } },
      });
      assert.equal(other.available_capacity, "0");
      assert.equal(
        (await csi.controller("GetCapacity", { parameters: { pool: "nope" } })).available_capacity,
        "0",
      );
      const multi = await csi.controller("GetCapacity", {
        volume_capabilities: [{ ...mountCap, access_mode: { mode: "MULTI_NODE_MULTI_WRITER" } }],
      });
      assert.equal(multi.available_capacity, "0");
      kernel.dataUsedBlocks = 15500; // past the 10% reserve
      assert.equal((await csi.controller("GetCapacity", {})).available_capacity, "0");
    });

    it("restore and clone: from a snapshot or a volume, larger allowed, smaller OUT_OF_RANGE, sources checked", async () => {
      const vol = (await createVolume("pvc-src", 8 * MiB)).volume?.volume_id ?? "";
      const snap = await csi.controller("CreateSnapshot", { name: "snap-1", source_volume_id: vol });
      const snapId = snap.snapshot?.snapshot_id ?? "";
      const restore = await createVolume("pvc-restore", 16 * MiB, {
        volume_content_source: { snapshot: { snapshot_id: snapId } },
      });
      assert.equal(restore.volume?.content_source?.snapshot?.snapshot_id, snapId);
      assert.equal(restore.volume?.capacity_bytes, String(16 * MiB));
      const clone = await createVolume("pvc-clone", 8 * MiB, {
        volume_content_source: { volume: { volume_id: vol } },
      });
      assert.equal(clone.volume?.content_source?.volume?.volume_id, vol);
      await rejects(
        createVolume("pvc-small", 4 * MiB, { volume_content_source: { snapshot: { snapshot_id: snapId } } }),
        status.OUT_OF_RANGE,
      );
      const missing = makeId("s-000000000000000000000000", "node-a");
      await rejects(
        createVolume("pvc-missing", 8 * MiB, {
          volume_content_source: { snapshot: { snapshot_id: missing } },
        }),
        status.NOT_FOUND,
      );
      await rejects(
        createVolume("pvc-garbage", 8 * MiB, {
          volume_content_source: { volume: { volume_id: "not-an-id" } },
        }),
        status.NOT_FOUND,
      );
      await rejects(
        createVolume("pvc-elsewhere", 8 * MiB, {
          volume_content_source: { snapshot: { snapshot_id: snapId.replace("@node-a", "@node-b") } },
        }),
        status.RESOURCE_EXHAUSTED,
        /lives on node node-b/,
      );
      // A clone too: RESOURCE_EXHAUSTED is what makes csi-provisioner drop the selected node and the
      // scheduler try again, instead of retrying on the wrong node (NOT_FOUND) or every 5 min (INVALID_ARGUMENT).
      await rejects(
        createVolume("clone-elsewhere", 8 * MiB, {
          volume_content_source: { volume: { volume_id: vol.replace("@node-a", "@node-b") } },
        }),
        status.RESOURCE_EXHAUSTED,
        /lives on node node-b, not on node-a/,
      );
    });

    it("CreateSnapshot: idempotent, ready, sized and timed; another source is ALREADY_EXISTS", async () => {
      const vol = (await createVolume("pvc-a")).volume?.volume_id ?? "";
      const volB = (await createVolume("pvc-b")).volume?.volume_id ?? "";
      const before = Math.floor(Date.now() / 1000);
      const s1 = await csi.controller("CreateSnapshot", { name: "snap", source_volume_id: vol });
      const s2 = await csi.controller("CreateSnapshot", { name: "snap", source_volume_id: vol });
      assert.equal(s1.snapshot?.snapshot_id, s2.snapshot?.snapshot_id);
      assert.equal(s1.snapshot?.ready_to_use, true);
      assert.equal(s1.snapshot?.size_bytes, String(8 * MiB));
      assert.equal(s1.snapshot?.source_volume_id, vol);
      assert.ok(Number(s1.snapshot?.creation_time?.seconds) >= before);
      await rejects(
        csi.controller("CreateSnapshot", { name: "snap", source_volume_id: volB }),
        status.ALREADY_EXISTS,
      );
      await rejects(
        csi.controller("CreateSnapshot", { name: "", source_volume_id: vol }),
        status.INVALID_ARGUMENT,
      );
      await rejects(
        csi.controller("CreateSnapshot", { name: "s", source_volume_id: "" }),
        status.INVALID_ARGUMENT,
      );
      await rejects(
        csi.controller("CreateSnapshot", {
          name: "s",
          source_volume_id: makeId("v-000000000000000000000000", "node-a"),
        }),
        status.NOT_FOUND,
      );
      await rejects(
        csi.controller("CreateSnapshot", { name: "s", source_volume_id: vol, parameters: { x: "1" } }),
        status.INVALID_ARGUMENT,
        /unknown snapshot parameter/,
      );
    });

    it("DeleteVolume and DeleteSnapshot: idempotent, independent, refused while staged", async () => {
      const vol = (await createVolume("pvc-a")).volume?.volume_id ?? "";
      const snap = (await csi.controller("CreateSnapshot", { name: "snap", source_volume_id: vol })).snapshot
        ?.snapshot_id as string;
      store.putNodePath(vol.split("@")[0] as string, "stage", "/staged", {});
      await rejects(csi.controller("DeleteVolume", { volume_id: vol }), status.FAILED_PRECONDITION, /staged/);
      store.deleteNodePath(vol.split("@")[0] as string, "stage", "/staged");
      await csi.controller("DeleteVolume", { volume_id: vol });
      await csi.controller("DeleteVolume", { volume_id: vol });
      await csi.controller("DeleteVolume", { volume_id: "garbage" });
      await rejects(csi.controller("DeleteVolume", { volume_id: "" }), status.INVALID_ARGUMENT);
      assert.equal((await csi.controller("GetSnapshot", { snapshot_id: snap })).snapshot?.snapshot_id, snap);
      await csi.controller("DeleteSnapshot", { snapshot_id: snap });
      await csi.controller("DeleteSnapshot", { snapshot_id: snap });
      await rejects(csi.controller("GetSnapshot", { snapshot_id: snap }), status.NOT_FOUND);
      assert.equal(kernel.thinIds.size, 0);
    });

    it("ListVolumes and ListSnapshots page with tokens; a foreign token is ABORTED", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await createVolume(`pvc-${i}`)).volume?.volume_id ?? "");
      const seen: string[] = [];
      let token = "";
      do {
        const page = await csi.controller("ListVolumes", { max_entries: 2, starting_token: token });
        assert.ok(page.entries.length <= 2);
        for (const e of page.entries) {
          seen.push(e.volume?.volume_id ?? "");
          assert.equal(e.status?.volume_condition?.abnormal, false);
        }
        token = page.next_token;
      } while (token);
      assert.deepEqual(seen.sort(), [...ids].sort());
      await rejects(csi.controller("ListVolumes", { starting_token: "bogus" }), status.ABORTED);

      await csi.controller("CreateSnapshot", { name: "sa", source_volume_id: ids[0] as string });
      await csi.controller("CreateSnapshot", { name: "sb", source_volume_id: ids[1] as string });
      const bySource = await csi.controller("ListSnapshots", { source_volume_id: ids[1] as string });
      assert.deepEqual(
        bySource.entries.map((e) => e.snapshot?.source_volume_id),
        [ids[1]],
      );
      const all = await csi.controller("ListSnapshots", {});
      assert.equal(all.entries.length, 2);
      const one = await csi.controller("ListSnapshots", {
        snapshot_id: all.entries[0]?.snapshot?.snapshot_id ?? "",
      });
      assert.equal(one.entries.length, 1);
      assert.equal((await csi.controller("ListSnapshots", { snapshot_id: "nope" })).entries.length, 0);
      await rejects(csi.controller("ListSnapshots", { starting_token: "../x" }), status.ABORTED);
    });

    it("ControllerGetVolume reports condition; ValidateVolumeCapabilities confirms or explains", async () => {
      const vol = (await createVolume("pvc-a")).volume?.volume_id ?? "";
      const got = await csi.controller("ControllerGetVolume", { volume_id: vol });
      assert.equal(got.volume?.volume_id, vol);
      assert.deepEqual(got.status?.volume_condition, { abnormal: false, message: "healthy" });
      kernel.poolMode = "out_of_data_space";
      assert.match(
        (await csi.controller("ControllerGetVolume", { volume_id: vol })).status?.volume_condition?.message ??
          "",
        /out of data space/,
      );
      await rejects(
        csi.controller("ControllerGetVolume", { volume_id: makeId("v-000000000000000000000000", "node-a") }),
        status.NOT_FOUND,
      );
      const ok = await csi.controller("ValidateVolumeCapabilities", {
        volume_id: vol,
        volume_capabilities: [mountCap],
      });
      assert.ok(ok.confirmed);
      const bad = await csi.controller("ValidateVolumeCapabilities", {
        volume_id: vol,
        volume_capabilities: [{ ...mountCap, access_mode: { mode: "MULTI_NODE_MULTI_WRITER" } }],
      });
      assert.equal(bad.confirmed, null);
      assert.match(bad.message, /not supported/);
      await rejects(
        csi.controller("ValidateVolumeCapabilities", { volume_id: vol, volume_capabilities: [] }),
        status.INVALID_ARGUMENT,
      );
    });

    it("RPCs the driver does not offer answer UNIMPLEMENTED", async () => {
      await rejects(csi.controller("ControllerExpandVolume", { volume_id: "x" }), status.UNIMPLEMENTED);
      await rejects(
        csi.controller("ControllerPublishVolume", { volume_id: "x", node_id: "n" }),
        status.UNIMPLEMENTED,
      );
    });
  });

  describe("Node", () => {
    const stagePath = () => join(kubelet, "plugins/kubernetes.io/csi/x/globalmount");

    it("NodeGetInfo and NodeGetCapabilities", async () => {
      const info = await csi.node("NodeGetInfo", {});
      assert.equal(info.node_id, "node-a");
      assert.equal(info.max_volumes_per_node, "100");
      assert.deepEqual(info.accessible_topology?.segments, { [TOPOLOGY_KEY]: "node-a" });
      const caps = (await csi.node("NodeGetCapabilities", {})).capabilities.map((c) => c.rpc?.type).sort();
      assert.deepEqual(caps, [
        "EXPAND_VOLUME",
        "GET_VOLUME_STATS",
        "SINGLE_NODE_MULTI_WRITER",
        "STAGE_UNSTAGE_VOLUME",
        "VOLUME_CONDITION",
      ]);
    });

    it("NodeStageVolume refuses bad requests before touching any device", async () => {
      const vol = (await createVolume("pvc-a")).volume?.volume_id ?? "";
      const base = { volume_id: vol, staging_target_path: stagePath(), volume_capability: mountCap };
      await rejects(csi.node("NodeStageVolume", { ...base, volume_id: "" }), status.INVALID_ARGUMENT);
      await rejects(
        csi.node("NodeStageVolume", { ...base, staging_target_path: "" }),
        status.INVALID_ARGUMENT,
      );
      await rejects(
        csi.node("NodeStageVolume", { ...base, volume_capability: null }),
        status.INVALID_ARGUMENT,
      );
      await rejects(
        csi.node("NodeStageVolume", { ...base, staging_target_path: "/etc/x" }),
        status.INVALID_ARGUMENT,
        /outside/,
      );
      await rejects(
        csi.node("NodeStageVolume", { ...base, staging_target_path: `${kubelet}/../etc` }),
        status.INVALID_ARGUMENT,
        /'\.\.'/,
      );
      await rejects(
        csi.node("NodeStageVolume", { ...base, staging_target_path: "relative/path" }),
        status.INVALID_ARGUMENT,
      );
      symlinkSync("/etc", join(kubelet, "escape"));
      await rejects(
        csi.node("NodeStageVolume", { ...base, staging_target_path: join(kubelet, "escape", "x") }),
        status.INVALID_ARGUMENT,
        /symlink/,
      );
      for (const flag of ["bind", "remount", "make-shared", "X-mount.owner=0", "ro,bind"]) {
        await rejects(
          csi.node("NodeStageVolume", {
            ...base,
            volume_capability: { ...mountCap, mount: { fs_type: "ext4", mount_flags: [flag] } },
          }),
          status.INVALID_ARGUMENT,
          /not allowed/,
        );
      }
      await rejects(
        csi.node("NodeStageVolume", { ...base, volume_id: makeId("v-000000000000000000000000", "node-a") }),
        status.NOT_FOUND,
      );
      await rejects(
        csi.node("NodeStageVolume", { ...base, volume_id: vol.replace("@node-a", "@node-b") }),
        status.NOT_FOUND,
      );
      assert.equal(kernel.devices.has(`tpcsi-${vol.split("@")[0]}`), false, "nothing was activated");
    });

    it("NodeStageVolume never formats a device that carries any signature", async () => {
      const vol = (await createVolume("pvc-a")).volume?.volume_id ?? "";
      kernel.blkid = { exitCode: 0, stdout: "PTTYPE=gpt\nPTUUID=1234" };
      await rejects(
        csi.node("NodeStageVolume", {
          volume_id: vol,
          staging_target_path: stagePath(),
          volume_capability: mountCap,
        }),
        status.FAILED_PRECONDITION,
        /PTTYPE=gpt.*refusing to format/,
      );
      kernel.blkid = { exitCode: 0, stdout: "TYPE=xfs\nUUID=abc" };
      await rejects(
        csi.node("NodeStageVolume", {
          volume_id: vol,
          staging_target_path: stagePath(),
          volume_capability: mountCap,
        }),
        status.FAILED_PRECONDITION,
        /already holds a xfs filesystem.*never reformatted/,
      );
      assert.equal(
        kernel.calls.some((c) => c[0]?.startsWith("mkfs")),
        false,
      );
    });

    it("NodePublishVolume needs the volume staged at that path; other publish errors", async () => {
      const vol = (await createVolume("pvc-a")).volume?.volume_id ?? "";
      const target = join(kubelet, "pods/p/volumes/v/mount");
      await rejects(
        csi.node("NodePublishVolume", {
          volume_id: vol,
          staging_target_path: stagePath(),
          target_path: target,
          volume_capability: mountCap,
        }),
        status.FAILED_PRECONDITION,
        /not staged/,
      );
      await rejects(
        csi.node("NodePublishVolume", {
          volume_id: vol,
          staging_target_path: stagePath(),
          target_path: "/var/evil",
          volume_capability: mountCap,
        }),
        status.INVALID_ARGUMENT,
      );
      await rejects(
        csi.node("NodePublishVolume", {
          volume_id: vol,
          staging_target_path: stagePath(),
          target_path: target,
          volume_capability: null,
        }),
        status.INVALID_ARGUMENT,
      );
    });

    it("NodeUnpublish and NodeUnstage are idempotent on paths that are not there", async () => {
      const vol = (await createVolume("pvc-a")).volume?.volume_id ?? "";
      await csi.node("NodeUnpublishVolume", {
        volume_id: vol,
        target_path: join(kubelet, "pods/none/mount"),
      });
      await csi.node("NodeUnstageVolume", { volume_id: vol, staging_target_path: stagePath() });
      await csi.node("NodeUnstageVolume", { volume_id: "gone", staging_target_path: stagePath() });
      await rejects(
        csi.node("NodeUnstageVolume", { volume_id: vol, staging_target_path: "/etc" }),
        status.INVALID_ARGUMENT,
      );
    });

    it("NodeGetVolumeStats: NOT_FOUND for an unknown volume or a path it is not at", async () => {
      const vol = (await createVolume("pvc-a")).volume?.volume_id ?? "";
      await rejects(
        csi.node("NodeGetVolumeStats", { volume_id: vol, volume_path: join(kubelet, "x") }),
        status.NOT_FOUND,
      );
      await rejects(
        csi.node("NodeGetVolumeStats", {
          volume_id: makeId("v-000000000000000000000000", "node-a"),
          volume_path: "/x",
        }),
        status.NOT_FOUND,
      );
      await rejects(
        csi.node("NodeGetVolumeStats", { volume_id: vol, volume_path: "" }),
        status.INVALID_ARGUMENT,
      );
    });

    it("NodeExpandVolume: limits are OUT_OF_RANGE, past the pool RESOURCE_EXHAUSTED, only where it is staged", async () => {
      const vol = (await createVolume("pvc-a", 8 * MiB)).volume?.volume_id ?? "";
      const path = join(kubelet, "x");
      await rejects(
        csi.node("NodeExpandVolume", {
          volume_id: vol,
          volume_path: path,
          capacity_range: { required_bytes: 16 * MiB },
        }),
        status.NOT_FOUND,
        /not staged or published/,
      );
      store.putNodePath(vol.split("@")[0] as string, "stage", path, {});
      // Already as large as asked (or no size given): OK, the device keeps its size.
      for (const capacity_range of [{ required_bytes: 4 * MiB }, null]) {
        const same = await csi.node("NodeExpandVolume", {
          volume_id: vol,
          volume_path: path,
          capacity_range,
        });
        assert.equal(same.capacity_bytes, String(8 * MiB));
      }
      await rejects(
        csi.node("NodeExpandVolume", {
          volume_id: vol,
          volume_path: path,
          capacity_range: { required_bytes: 16 * MiB + 1, limit_bytes: 16 * MiB + 1 },
        }),
        status.OUT_OF_RANGE,
      );
      await rejects(
        csi.node("NodeExpandVolume", {
          volume_id: vol,
          volume_path: path,
          capacity_range: { required_bytes: 4096 * MiB },
        }),
        status.RESOURCE_EXHAUSTED,
      );
      await rejects(
        csi.node("NodeExpandVolume", {
          volume_id: vol,
          volume_path: path,
          capacity_range: { required_bytes: -1 },
        }),
        status.INVALID_ARGUMENT,
      );
      assert.equal(
        store.getDevice(vol.split("@")[0] as string)?.sizeBytes,
        8 * MiB,
        "refused grows change nothing",
      );
    });
  });
});
