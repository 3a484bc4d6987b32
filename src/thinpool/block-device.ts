import { open, stat } from "node:fs/promises";
import type { CommandRunner } from "./command.js";

/** "major:minor" of a block device node, as dm tables and /sys/dev/block name it. */
export async function deviceNumber(path: string): Promise<string> {
  const st = await stat(path, { bigint: true });
  if (!st.isBlockDevice()) throw new Error(`${path} is not a block device`);
  const rdev = st.rdev;
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

export async function blockDeviceBytes(runner: CommandRunner, path: string): Promise<number> {
  const { stdout } = await runner.run("blockdev", ["--getsize64", path]);
  const bytes = Number(stdout.trim());
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    throw new Error(`blockdev reported size '${stdout}' for ${path}`);
  return bytes;
}

/** Reads the first `length` bytes of a device directly (no cache of a previous probe). */
export async function readHead(path: string, length: number): Promise<Buffer> {
  const handle = await open(path, "r");
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** dm-thin metadata superblock magic (thin-provisioning-tools SUPERBLOCK_MAGIC), little-endian at offset 32. */
export const THIN_SUPERBLOCK_MAGIC = 27022010n;

export type MetadataContent = "blank" | "thin-pool" | "foreign";

/**
 * What the metadata device holds: blank (first 4 KiB zero: the kernel will format a new pool),
 * an existing thin-pool superblock (re-assemble it), or anything else (refuse: never format over data).
 */
export function classifyMetadataHead(head: Buffer): MetadataContent {
  if (head.length >= 4096 && head.subarray(0, 4096).every((b) => b === 0)) return "blank";
  if (head.length >= 40 && head.readBigUInt64LE(32) === THIN_SUPERBLOCK_MAGIC) return "thin-pool";
  return "foreign";
}
