// Helpers of test/e2e/suites/full-pool.test.ts: small pools carved out of the suite VM's disks with
// dm-linear (so they can be grown by reloading the linear table), an in-process driver on them, writers
// that report the errno they got, and checksums read past the page cache.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parsePoolStatus, type PoolStatus } from "../../../src/thinpool/status.js";
import { sh } from "./vm-env.js";

export const KiB = 1024;
export const MiB = 1024 * KiB;
const SECTOR = 512;

export interface Segment {
  device: string;
  offsetBytes: number;
  bytes: number;
}

/** Creates a dm-linear device over the segments, or reloads an existing one with them (growing it). */
export async function linear(name: string, segments: Segment[]): Promise<string> {
  let start = 0;
  const table = segments
    .map((s) => {
      const line = `${start} ${s.bytes / SECTOR} linear ${s.device} ${s.offsetBytes / SECTOR}`;
      start += s.bytes / SECTOR;
      return line;
    })
    .join("\n");
  const exists = await sh("dmsetup", ["info", name]).then(
    () => true,
    () => false,
  );
  if (exists) {
    await sh("dmsetup", ["reload", name, "--table", table]);
    await sh("dmsetup", ["resume", name]);
  } else {
    await sh("dmsetup", ["create", name, "--table", table]);
  }
  return `/dev/mapper/${name}`;
}

/** Zeroes a range of a device (a metadata region must start blank or the driver refuses it). */
export async function zeroRange(device: string, offsetBytes: number, bytes: number): Promise<void> {
  const handle = await open(device, "r+");
  try {
    await handle.write(Buffer.alloc(bytes), 0, bytes, offsetBytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function poolStatus(dmName: string): Promise<PoolStatus> {
  return parsePoolStatus(await sh("dmsetup", ["status", dmName]));
}

export interface WriteOutcome {
  /** Writes that returned success (for "fsync", before the final fsync). */
  written: number;
  /** errno code of the first failure (of a write or of the fsync), undefined when all succeeded. */
  error?: string;
  /** Which call failed. */
  failedAt?: "write" | "fsync";
}

/**
 * Writes `count` chunks of random data at `start + i * stride`. "dsync": O_DSYNC, each write reaches the
 * disk (and dm-thin commits its metadata) before the next; "fsync": buffered writes, with an fsync after
 * every `fsyncEvery` writes (default: once, at the end). A flush makes dm-thin commit its metadata, so
 * the fsync interval bounds how much metadata one transaction can need.
 */
export async function stridedWrite(
  path: string,
  options: {
    start?: number;
    stride: number;
    count: number;
    chunk?: number;
    sync: "dsync" | "fsync";
    fsyncEvery?: number;
  },
): Promise<WriteOutcome> {
  const chunk = options.chunk ?? 4 * KiB;
  const flags = constants.O_RDWR | (options.sync === "dsync" ? constants.O_DSYNC : 0);
  const every = options.sync === "fsync" ? (options.fsyncEvery ?? options.count) : 0;
  const handle = await open(path, flags);
  let written = 0;
  const sync = async (): Promise<WriteOutcome | undefined> => {
    try {
      await handle.sync();
      return undefined;
    } catch (err) {
      return { written, error: (err as NodeJS.ErrnoException).code, failedAt: "fsync" };
    }
  };
  try {
    for (let i = 0; i < options.count; i++) {
      try {
        await handle.write(randomBytes(chunk), 0, chunk, (options.start ?? 0) + i * options.stride);
      } catch (err) {
        return { written, error: (err as NodeJS.ErrnoException).code, failedAt: "write" };
      }
      written++;
      if (every > 0 && (written % every === 0 || written === options.count)) {
        const failed = await sync();
        if (failed) return failed;
      }
    }
    return { written };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** sha256 of the first `bytes` of a device or file, read with O_DIRECT (the disk, not the page cache). */
export async function directSha(path: string, bytes: number): Promise<string> {
  const out = await sh("sh", [
    "-c",
    `dd if="$1" iflag=direct bs=1M count=${bytes / MiB} status=none | sha256sum`,
    "sha",
    path,
  ]);
  return out.split(" ")[0] as string;
}

/** Fills the first `bytes` of a device with random data, O_DIRECT, and returns its checksum. */
export async function writeRandom(path: string, bytes: number, seekBytes = 0): Promise<string> {
  const src = join(tmpdir(), `full-pool-src-${process.pid}`);
  await sh("dd", ["if=/dev/urandom", `of=${src}`, "bs=1M", `count=${bytes / MiB}`, "status=none"]);
  await sh("dd", [
    `if=${src}`,
    `of=${path}`,
    "bs=1M",
    `seek=${seekBytes / MiB}`,
    "oflag=direct",
    "conv=fsync",
    "status=none",
  ]);
  const sum = (await sh("sha256sum", [src])).split(" ")[0] as string;
  await sh("rm", ["-f", src]);
  return sum;
}

/** Polls `check` (every 250 ms) until it returns a value, or fails after `deadlineMs` naming `what`. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  deadlineMs = 60_000,
): Promise<T> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > end) assert.fail(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
