import { statfs } from "node:fs/promises";
import type { CommandRunner } from "../thinpool/command.js";
import { CommandError } from "../thinpool/errors.js";

export type FilesystemType = "ext4" | "xfs";
export const SUPPORTED_FILESYSTEMS: readonly FilesystemType[] = ["ext4", "xfs"];

export type ProbeResult =
  { kind: "empty" } | { kind: "filesystem"; type: string } | { kind: "other"; what: string };

/**
 * Probes what a device holds by reading it (`blkid -p`: low-level probe, no cache), so a device that
 * carries any signature (a filesystem, a partition table, RAID or LVM metadata) is never formatted.
 * blkid exits 2 only when it finds nothing at all.
 */
export async function probeDevice(runner: CommandRunner, device: string): Promise<ProbeResult> {
  try {
    const { stdout } = await runner.run("blkid", ["-p", "-o", "export", device]);
    const fields = new Map(
      stdout
        .split("\n")
        .map((l) => l.split("="))
        .filter((kv): kv is [string, string] => kv.length >= 2)
        .map(([k, v]) => [k, v]),
    );
    const type = fields.get("TYPE");
    if (type && fields.get("USAGE") !== "raid" && !fields.has("PTTYPE")) return { kind: "filesystem", type };
    return {
      kind: "other",
      what: [...fields].map(([k, v]) => `${k}=${v}`).join(" ") || "an unknown signature",
    };
  } catch (err) {
    if (err instanceof CommandError && err.exitCode === 2) return { kind: "empty" };
    throw err;
  }
}

export async function makeFilesystem(
  runner: CommandRunner,
  device: string,
  fsType: FilesystemType,
  extraOptions: string[],
): Promise<void> {
  if (fsType === "ext4") {
    // nodiscard: a fresh thin device has no blocks to discard, and discarding a large one is slow.
    // lazy init stays on: zeroing every inode table up front would allocate thin blocks for nothing.
    await runner.run("mkfs.ext4", ["-q", "-F", "-E", "nodiscard", "-m", "0", ...extraOptions, device], {
      timeoutMs: 600_000,
    });
  } else {
    await runner.run("mkfs.xfs", ["-q", "-K", ...extraOptions, device], { timeoutMs: 600_000 });
  }
}

/** Grows a mounted filesystem to fill its device (online). */
export async function growFilesystem(
  runner: CommandRunner,
  device: string,
  mountPoint: string,
  fsType: string,
): Promise<void> {
  if (fsType === "xfs") await runner.run("xfs_growfs", [mountPoint], { timeoutMs: 600_000 });
  else await runner.run("resize2fs", [device], { timeoutMs: 600_000 });
}

export interface FilesystemStats {
  totalBytes: number;
  availableBytes: number;
  usedBytes: number;
  totalInodes: number;
  freeInodes: number;
  usedInodes: number;
}

export async function filesystemStats(path: string): Promise<FilesystemStats> {
  const s = await statfs(path);
  return {
    totalBytes: s.blocks * s.bsize,
    availableBytes: s.bavail * s.bsize,
    usedBytes: (s.blocks - s.bfree) * s.bsize,
    totalInodes: s.files,
    freeInodes: s.ffree,
    usedInodes: s.files - s.ffree,
  };
}
