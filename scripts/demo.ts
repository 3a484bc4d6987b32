/**
 * `npm run demo`: the driver's main job on an embedded default. Starts the driver on a loop-file pool in a
 * temporary directory and acts as kubelet and the sidecars would, through the CSI socket: create a volume,
 * stage and publish it, write a file, snapshot it, restore into a larger volume, read the file back, expand
 * online, clean everything up, and print each step with its timing.
 *
 * Where this kernel has no device-mapper (as on the development machines), the same demo runs inside the
 * test VM and says so. It leaves no devices, mounts or files behind, even when interrupted.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { CsiClient } from "../src/csi/client.js";
import { parseServeArgs } from "../src/server/config.js";
import { startDriver } from "../src/server/driver.js";
import { thinpoolDriverFactories } from "../src/server/engine-wiring.js";
import { createLogger } from "../src/server/logger.js";

const MiB = 1024 * 1024;
const INSIDE_FLAG = "--inside-vm";

async function hostHasDmThin(): Promise<boolean> {
  if (!existsSync("/dev/mapper/control")) return false;
  const targets = await execa("dmsetup", ["targets"], { reject: false });
  if (targets.stdout.includes("thin-pool")) return true;
  return (await execa("modprobe", ["dm-thin-pool"], { reject: false })).exitCode === 0;
}

async function runInsideVm(): Promise<number> {
  process.stdout.write(
    "This kernel has no device-mapper thin support: running the demo inside the test VM (qemu, ~10 s to boot)...\n",
  );
  const { runInVm } = await import("../test/e2e/harness/vm.js");
  const result = await runInVm({
    command: ["node", "dist/scripts/demo.js", INSIDE_FLAG],
    timeoutMs: 600_000,
    onLine: (line) => process.stdout.write(`${line}\n`),
  });
  return result.exitCode ?? 1;
}

async function demo(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "thinpool-csi-demo-"));
  const kubelet = join(dir, "kubelet");
  mkdirSync(kubelet, { recursive: true });
  const socket = join(dir, "csi.sock");
  const { config } = parseServeArgs(
    [
      "--endpoint",
      `unix://${socket}`,
      "--node-id",
      "demo-node",
      "--state-dir",
      join(dir, "state"),
      "--kubelet-dir",
      kubelet,
      "--pool",
      "name=demo,type=loop,dataSize=1Gi,metadataSize=64Mi",
      "--metrics-address",
      "",
    ],
    { env: {} },
  );
  if (!config) throw new Error("demo configuration did not parse");
  const driver = await startDriver(config, thinpoolDriverFactories, {
    handleSignals: false,
    logger: createLogger({ level: "warn" }),
  });
  const csi = new CsiClient(socket);
  const cleanups: (() => Promise<unknown>)[] = [];
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  // Persistent listeners, not once(): execa's exit hook re-raises a signal when no other listener is left,
  // which would kill the demo in the middle of a step and skip the clean-up.
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const timed = async <T>(label: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const value = await fn();
    process.stdout.write(`  ${label.padEnd(58)} ${(performance.now() - t0).toFixed(1).padStart(8)} ms\n`);
    return value;
  };
  /** A step of the job: refused once interrupted. Clean-up goes through `timed` and always runs. */
  const step = async <T>(label: string, fn: () => Promise<T>): Promise<T> => {
    if (interrupted) throw new Error("interrupted");
    return timed(label, fn);
  };
  const mountCap = {
    access_mode: { mode: "SINGLE_NODE_WRITER" as const },
    mount: { fs_type: "ext4", mount_flags: [] },
  };
  const stagePath = (n: string) =>
    join(kubelet, "plugins/kubernetes.io/csi/thinpool.csi.dev", n, "globalmount");
  const targetPath = (n: string) => join(kubelet, "pods/demo-pod/volumes/kubernetes.io~csi", n, "mount");

  try {
    await driver.started;
    process.stdout.write(
      `thinpool-csi demo: driver on ${socket}, loop-file pool (1 GiB data, 64 MiB metadata)\n`,
    );
    await step("Probe (ready after start-up reconciliation)", async () => {
      const p = await csi.identity("Probe", {});
      if (!p.ready?.value) throw new Error("driver not ready");
    });
    const vol = await step("CreateVolume pvc-demo (256 MiB)", () =>
      csi.controller("CreateVolume", {
        name: "pvc-demo",
        capacity_range: { required_bytes: 256 * MiB },
        volume_capabilities: [mountCap],
      }),
    );
    const volId = vol.volume?.volume_id ?? "";
    cleanups.unshift(() => csi.controller("DeleteVolume", { volume_id: volId }));
    await step("NodeStageVolume (activate, mkfs.ext4, mount)", () =>
      csi.node("NodeStageVolume", {
        volume_id: volId,
        staging_target_path: stagePath("vol"),
        volume_capability: mountCap,
      }),
    );
    cleanups.unshift(() =>
      csi.node("NodeUnstageVolume", { volume_id: volId, staging_target_path: stagePath("vol") }),
    );
    await step("NodePublishVolume (bind mount into the pod)", () =>
      csi.node("NodePublishVolume", {
        volume_id: volId,
        staging_target_path: stagePath("vol"),
        target_path: targetPath("vol"),
        volume_capability: mountCap,
      }),
    );
    cleanups.unshift(() =>
      csi.node("NodeUnpublishVolume", { volume_id: volId, target_path: targetPath("vol") }),
    );
    await step("write hello.txt in the pod's volume and sync", async () => {
      writeFileSync(join(targetPath("vol"), "hello.txt"), "hello from thinpool-csi\n");
      await execa("sync");
    });
    const snap = await step("CreateSnapshot snap-demo (origin suspended briefly)", () =>
      csi.controller("CreateSnapshot", { name: "snap-demo", source_volume_id: volId }),
    );
    const snapId = snap.snapshot?.snapshot_id ?? "";
    cleanups.unshift(() => csi.controller("DeleteSnapshot", { snapshot_id: snapId }));
    const restored = await step("CreateVolume pvc-restore from the snapshot (512 MiB)", () =>
      csi.controller("CreateVolume", {
        name: "pvc-restore",
        capacity_range: { required_bytes: 512 * MiB },
        volume_capabilities: [mountCap],
        volume_content_source: { snapshot: { snapshot_id: snapId } },
      }),
    );
    const restId = restored.volume?.volume_id ?? "";
    cleanups.unshift(() => csi.controller("DeleteVolume", { volume_id: restId }));
    await step("NodeStageVolume the restore (no mkfs; fs grown)", () =>
      csi.node("NodeStageVolume", {
        volume_id: restId,
        staging_target_path: stagePath("rest"),
        volume_capability: mountCap,
      }),
    );
    cleanups.unshift(() =>
      csi.node("NodeUnstageVolume", { volume_id: restId, staging_target_path: stagePath("rest") }),
    );
    const text = await step("read hello.txt back from the restore", async () =>
      readFileSync(join(stagePath("rest"), "hello.txt"), "utf8"),
    );
    process.stdout.write(`    restored file says: ${text.trim()}\n`);
    if (text !== "hello from thinpool-csi\n") throw new Error("the restore does not hold the file");
    const expanded = await step("NodeExpandVolume pvc-demo to 384 MiB, online", () =>
      csi.node("NodeExpandVolume", {
        volume_id: volId,
        volume_path: targetPath("vol"),
        capacity_range: { required_bytes: 384 * MiB },
      }),
    );
    process.stdout.write(`    new size: ${Number(expanded.capacity_bytes) / MiB} MiB\n`);
  } finally {
    for (const cleanup of cleanups)
      await timed("clean up", cleanup).catch((err: unknown) =>
        process.stdout.write(`  cleanup failed: ${String(err)}\n`),
      );
    csi.close();
    await driver.server.shutdown();
    await removeLoopPool(dir);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    rmSync(dir, { recursive: true, force: true });
    process.stdout.write("demo finished: no devices, mounts or files left behind\n");
  }
}

/** Takes down the demo pool and its loop devices (the driver leaves pools assembled by design). */
async function removeLoopPool(dir: string): Promise<void> {
  await execa("dmsetup", ["remove", "thinpool-csi-demo"], { reject: false, env: { DM_DISABLE_UDEV: "1" } });
  for (const file of ["demo-data.img", "demo-metadata.img"]) {
    const found = await execa(
      "losetup",
      ["--list", "--noheadings", "--output", "NAME", "--associated", join(dir, "state", "pools", file)],
      { reject: false },
    );
    for (const dev of found.stdout.split("\n").filter(Boolean))
      await execa("losetup", ["--detach", dev.trim()], { reject: false });
  }
}

const inside = process.argv.includes(INSIDE_FLAG);
if (!inside && !(await hostHasDmThin())) {
  process.exitCode = await runInsideVm();
} else {
  await demo().catch((err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
