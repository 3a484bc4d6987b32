import { mkdir, open as openFile, stat } from "node:fs/promises";
import { join } from "node:path";
import type { CommandRunner } from "./command.js";
import { blockDeviceBytes, classifyMetadataHead, deviceNumber, readHead } from "./block-device.js";
import type { Dmsetup } from "./dmsetup.js";
import { EngineError } from "./errors.js";
import { parsePoolTable, SECTOR_BYTES } from "./status.js";

/** Where a pool comes from. */
export type PoolSource =
  /** A thin-pool dm device that already exists (a plain dm pool, or an LVM thin pool's `-tpool` device). */
  | { type: "existing"; device: string }
  /** The engine assembles a pool from a data and a metadata block device. */
  | { type: "devices"; data: string; metadata: string; blockSizeBytes?: number }
  /** Sparse files on loop devices: development and the demo only (slow, like Docker's old loopback mode). */
  | { type: "loop"; dir: string; dataSizeBytes: number; metadataSizeBytes: number; blockSizeBytes?: number };

export interface PoolSpec {
  name: string;
  source: PoolSource;
}

export interface AssembledPool {
  name: string;
  dmName: string;
  /** "major:minor" of the pool device, used in thin tables so they do not depend on /dev/mapper nodes. */
  devno: string;
  blockBytes: number;
  /**
   * Whether the engine may advance the kernel transaction id. Not for LVM pools: LVM keeps its own
   * expected transaction id in the VG metadata and refuses to activate a pool whose id moved under it.
   */
  ownsTransactionId: boolean;
  /**
   * "major:minor" of the data and metadata devices of a pool the engine assembled itself (devices, loop),
   * so it can follow them when they grow (see pool-growth.ts). Undefined for existing pools, which belong
   * to whoever made them (LVM grows its own).
   */
  devices?: PoolDevices;
  /** Human-readable notes for the log (e.g. "created new pool", "re-assembled"). */
  notes: string[];
}

export interface PoolDevices {
  data: string;
  metadata: string;
  /** Sizes (data/metadata blocks) the pool was last reloaded for, so a reload the kernel ignores is not repeated. */
  lastGrowAttempt?: string;
}

export const DEFAULT_BLOCK_BYTES = 64 * 1024;
const POOL_DM_PREFIX = "thinpool-csi-";

export interface AssembleContext {
  runner: CommandRunner;
  dmsetup: Dmsetup;
  /** Devices the store already records in this pool: a blank metadata device must then be refused. */
  knownDeviceCount: number;
}

export async function assemblePool(spec: PoolSpec, ctx: AssembleContext): Promise<AssembledPool> {
  switch (spec.source.type) {
    case "existing":
      return openExistingPool(spec.name, spec.source.device, ctx);
    case "devices":
      return assembleFromDevices(
        spec.name,
        spec.source.data,
        spec.source.metadata,
        spec.source.blockSizeBytes,
        ctx,
      );
    case "loop": {
      const { data, metadata } = await attachLoopFiles(spec.name, spec.source, ctx.runner);
      const pool = await assembleFromDevices(spec.name, data, metadata, spec.source.blockSizeBytes, ctx);
      pool.notes.push(
        `loop-file pool on ${data} and ${metadata}: for development only; I/O through loop files is slow`,
      );
      return pool;
    }
  }
}

/**
 * LVM names a thin pool's dm device `vg-pool` while LVM itself has no thin volumes in it (the case for a
 * pool dedicated to this driver), and `vg-pool-tpool` (with `vg-pool` a different, linear device) once it
 * has. Accept either spelling and use whichever device really is the thin-pool target.
 */
function lvmNameVariants(dmName: string): string[] {
  return dmName.endsWith("-tpool")
    ? [dmName, dmName.slice(0, -"-tpool".length)]
    : [dmName, `${dmName}-tpool`];
}

async function openExistingPool(name: string, device: string, ctx: AssembleContext): Promise<AssembledPool> {
  const given = device.replace(/^\/dev\/mapper\//, "");
  for (const dmName of lvmNameVariants(given)) {
    const info = await ctx.dmsetup.info(dmName);
    if (!info) continue;
    const line = await ctx.dmsetup.table(dmName);
    if (line.trim().split(/\s+/)[2] !== "thin-pool") continue;
    const table = parsePoolTable(line);
    const lvm = info.uuid.startsWith("LVM-");
    return {
      name,
      dmName,
      devno: info.devno,
      blockBytes: table.blockSizeSectors * SECTOR_BYTES,
      ownsTransactionId: !lvm,
      notes: [`using existing thin-pool ${dmName}${lvm ? " (LVM-managed)" : ""}`],
    };
  }
  throw new EngineError(
    "PoolUnavailable",
    `pool '${name}': no thin-pool device '${lvmNameVariants(given).join("' or '")}' exists; ` +
      `activate it first (for an LVM thin pool: lvchange -ay <vg>/<pool>)`,
  );
}

async function assembleFromDevices(
  name: string,
  dataPath: string,
  metadataPath: string,
  blockSizeBytes: number | undefined,
  ctx: AssembleContext,
): Promise<AssembledPool> {
  const blockBytes = blockSizeBytes ?? DEFAULT_BLOCK_BYTES;
  if (blockBytes % (64 * 1024) !== 0 || blockBytes < 64 * 1024 || blockBytes > 1024 * 1024 * 1024) {
    throw new EngineError(
      "InvalidArgument",
      `pool '${name}': block size must be a multiple of 64KiB, got ${blockBytes}`,
    );
  }
  const dmName = POOL_DM_PREFIX + name;
  const [dataDevno, metaDevno] = await Promise.all([deviceNumber(dataPath), deviceNumber(metadataPath)]);

  const live = await ctx.dmsetup.info(dmName);
  if (live) {
    // Still assembled from an earlier run of the driver (no reboot since): reuse it if it is ours.
    const table = parsePoolTable(await ctx.dmsetup.table(dmName));
    if (table.dataDevice !== dataDevno || table.metadataDevice !== metaDevno) {
      throw new EngineError(
        "PoolUnavailable",
        `pool '${name}': ${dmName} exists but is built on ${table.dataDevice}/${table.metadataDevice}, ` +
          `not on ${dataPath} (${dataDevno}) / ${metadataPath} (${metaDevno})`,
      );
    }
    return {
      name,
      dmName,
      devno: live.devno,
      blockBytes: table.blockSizeSectors * SECTOR_BYTES,
      ownsTransactionId: true,
      devices: { data: dataDevno, metadata: metaDevno },
      notes: [`pool ${dmName} already assembled`],
    };
  }

  const content = classifyMetadataHead(await readHead(metadataPath, 4096));
  if (content === "foreign") {
    throw new EngineError(
      "PoolUnavailable",
      `pool '${name}': metadata device ${metadataPath} holds something that is not thin-pool metadata; ` +
        `refusing to format it. Zero its first 4KiB by hand if it really is meant for this pool.`,
    );
  }
  if (content === "blank" && ctx.knownDeviceCount > 0) {
    throw new EngineError(
      "PoolUnavailable",
      `pool '${name}': metadata device ${metadataPath} is blank but the state store records ` +
        `${ctx.knownDeviceCount} devices in this pool; refusing to create an empty pool over it ` +
        `(wrong device, or the metadata was wiped)`,
    );
  }
  const dataBytes = await blockDeviceBytes(ctx.runner, dataPath);
  const blockSectors = blockBytes / SECTOR_BYTES;
  const lengthSectors = Math.floor(dataBytes / SECTOR_BYTES / blockSectors) * blockSectors;
  if (lengthSectors === 0)
    throw new EngineError(
      "InvalidArgument",
      `pool '${name}': data device ${dataPath} is smaller than one block`,
    );
  // error_if_no_space: when the data space runs out, writes fail at once instead of queueing for 60 s and
  // freezing every workload on the node (see docs/RELIABILITY.md). Block zeroing stays on so a new volume
  // never shows another tenant's old data.
  const table = `0 ${lengthSectors} thin-pool ${metaDevno} ${dataDevno} ${blockSectors} 0 1 error_if_no_space`;
  await ctx.dmsetup.create(dmName, table, `THINPOOL-CSI-POOL-${name}`);
  const info = await ctx.dmsetup.info(dmName);
  if (!info)
    throw new EngineError("PoolUnavailable", `pool '${name}': ${dmName} vanished right after creation`);
  return {
    name,
    dmName,
    devno: info.devno,
    blockBytes,
    ownsTransactionId: true,
    devices: { data: dataDevno, metadata: metaDevno },
    notes: [
      content === "blank"
        ? `created new pool ${dmName}`
        : `re-assembled pool ${dmName} from existing metadata`,
    ],
  };
}

async function attachLoopFiles(
  name: string,
  source: Extract<PoolSource, { type: "loop" }>,
  runner: CommandRunner,
): Promise<{ data: string; metadata: string }> {
  await mkdir(source.dir, { recursive: true });
  const attach = async (file: string, sizeBytes: number): Promise<string> => {
    const exists = await stat(file).then(
      () => true,
      () => false,
    );
    if (!exists) {
      const handle = await openFile(file, "wx");
      await handle.truncate(sizeBytes);
      await handle.close();
    }
    const found = (
      await runner.run("losetup", ["--list", "--noheadings", "--output", "NAME", "--associated", file])
    ).stdout.trim();
    if (found) return found.split("\n")[0] as string;
    return (await runner.run("losetup", ["--find", "--show", file])).stdout.trim();
  };
  return {
    data: await attach(join(source.dir, `${name}-data.img`), source.dataSizeBytes),
    metadata: await attach(join(source.dir, `${name}-metadata.img`), source.metadataSizeBytes),
  };
}
