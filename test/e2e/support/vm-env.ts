import { createHash } from "node:crypto";
import { open, readFile } from "node:fs/promises";
import { execa } from "execa";
import { parseMountInfo } from "../../../src/node/mounts.js";

// These suites write to raw block devices: refuse loudly anywhere but inside the test VM.
if (process.env.THINPOOL_VM !== "1") {
  throw new Error(
    "this suite manipulates block devices and must run inside the test VM: use npm run test:e2e",
  );
}

/** The disks the harness gives the in-VM suites. */
export const E2E_DATA_DEV = process.env.THINPOOL_E2E_DATA_DEV ?? "/dev/vda";
export const E2E_META_DEV = process.env.THINPOOL_E2E_META_DEV ?? "/dev/vdb";
export const E2E_STATE_DEV = process.env.THINPOOL_E2E_STATE_DEV ?? "/dev/vdc";

export const env = { ...process.env, DM_DISABLE_UDEV: "1", LC_ALL: "C" };

/** Runs a host tool in the VM (test workload, not product code). */
export async function sh(file: string, args: string[]): Promise<string> {
  const result = await execa(file, args, { env });
  return result.stdout;
}

export async function zeroHead(device: string, bytes = 1024 * 1024): Promise<void> {
  const handle = await open(device, "r+");
  try {
    await handle.write(Buffer.alloc(bytes), 0, bytes, 0);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function sha256File(path: string): Promise<string> {
  const handle = await open(path, "r");
  try {
    const hash = createHash("sha256");
    for await (const chunk of handle.createReadStream()) hash.update(chunk as Buffer);
    return hash.digest("hex");
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Removes every dm device (thin devices first, then pools): what a reboot does to device-mapper. A suite
 * that failed midway can leave a device suspended or mounted; both are undone first (resumed, then
 * unmounted), so that one failed suite does not make every later suite's setup fail on a busy device.
 */
export async function removeAllDmDevices(): Promise<void> {
  const listing = await sh("dmsetup", [
    "info",
    "-c",
    "--noheadings",
    "--separator",
    "|",
    "-o",
    "name,suspended",
  ]);
  const devices = listing
    .split("\n")
    .map((line) => line.trim().split("|"))
    .filter(([name, state]) => name && state !== undefined);
  for (const [name, state] of devices)
    if (state === "Suspended") await sh("dmsetup", ["resume", name as string]);
  for (const mountPoint of await dmMountPoints()) await sh("umount", [mountPoint]);
  const names = devices.map(([name]) => name as string);
  const thins = names.filter((n) => !n.startsWith("thinpool-csi-"));
  const pools = names.filter((n) => n.startsWith("thinpool-csi-"));
  for (const n of [...thins, ...pools]) await sh("dmsetup", ["remove", n]);
}

/** Mount points of filesystems on dm devices, the latest mounted first (a bind mount before its source). */
async function dmMountPoints(): Promise<string[]> {
  const major = /^\s*(\d+) device-mapper$/m.exec(await readFile("/proc/devices", "utf8"))?.[1];
  if (major === undefined) return [];
  return parseMountInfo(await readFile("/proc/self/mountinfo", "utf8"))
    .filter((entry) => entry.devno.split(":")[0] === major)
    .map((entry) => entry.mountPoint)
    .reverse();
}

export const silentLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };
