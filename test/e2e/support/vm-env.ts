import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { execa } from "execa";

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

/** Removes every dm device (thin devices first, then pools): what a reboot does to device-mapper. */
export async function removeAllDmDevices(): Promise<void> {
  const names = (await sh("dmsetup", ["ls"]))
    .split("\n")
    .map((l) => l.split(/\s+/)[0] ?? "")
    .filter((n) => n && n !== "No");
  const thins = names.filter((n) => !n.startsWith("thinpool-csi-"));
  const pools = names.filter((n) => n.startsWith("thinpool-csi-"));
  for (const n of [...thins, ...pools]) await sh("dmsetup", ["remove", n]);
}

export const silentLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };
