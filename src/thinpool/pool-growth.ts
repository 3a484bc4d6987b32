/**
 * Following a pool's devices when they grow. For a pool the engine assembled (devices, loop) the operator
 * makes room by growing the data or metadata device (an LVM LV, a cloud disk, a dm-linear, a loop file);
 * the kernel does not notice by itself:
 *   - a larger data device is used only once the pool's table is reloaded with a longer length;
 *   - a larger metadata device is used at the pool's next resume (dm-thin compares the device with the
 *     superblock in its preresume hook).
 * Reloading with the longer length and resuming does both, and takes the pool out of out_of_data_space
 * mode, and out of the read-only mode it enters when metadata runs out once the metadata device is larger
 * (measured on 6.1 in the VM: a resume without growth leaves the pool in either mode). The kernel refuses
 * to grow a pool whose metadata needs a check ("unable to grow ... until repaired"), so such a pool is left
 * alone: it needs thin_check first (docs/RELIABILITY.md, "Full pools"). A read-only pool whose metadata
 * device did not grow is left alone too: a reload could put it back in write mode with no free metadata.
 */
import { readFileSync } from "node:fs";
import type { Dmsetup } from "./dmsetup.js";
import type { AssembledPool } from "./pool-source.js";
import { METADATA_BLOCK_BYTES, parsePoolTable, SECTOR_BYTES, type PoolStatus } from "./status.js";

/** dm-thin uses at most this many metadata blocks (DM_SM_METADATA_MAX_BLOCKS), however large the device. */
export const MAX_METADATA_BLOCKS = 255 * ((1 << 14) - 64);

/**
 * Size in 512-byte sectors of the block device with this "major:minor" (sysfs: no process, cheap to poll).
 * Read synchronously: sysfs answers from memory, and start-up reads one per active device (2,000 and more),
 * where an asynchronous read would cost a thread-pool round trip each.
 */
export async function sysfsSectors(devno: string): Promise<number> {
  const text = readFileSync(`/sys/dev/block/${devno}/size`, "utf8");
  const sectors = Number(text.trim());
  if (!Number.isSafeInteger(sectors)) throw new Error(`bad size '${text.trim()}' for block device ${devno}`);
  return sectors;
}

/**
 * Sizes in 512-byte sectors of every block device, by "major:minor", from one read of /proc/partitions
 * (its sizes are in KiB). Start-up checks one size per active device: 2,000 sysfs reads took 286-729 ms in
 * the test VM, this read 32-71 ms. A device it does not list is read from sysfs.
 */
export async function partitionSectors(): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for (const line of readFileSync("/proc/partitions", "utf8").split("\n")) {
    const [major, minor, kib] = line.trim().split(/\s+/);
    if (major && minor && kib && [major, minor, kib].every((field) => /^\d+$/.test(field)))
      sizes.set(`${major}:${minor}`, Number(kib) * 2);
  }
  return sizes;
}

export interface DeviceGrowth {
  dataBlocks: number;
  metadataBlocks: number;
}

/**
 * How many data and metadata blocks the pool's devices now hold, when that is more than the pool uses
 * (and that size was not already tried); undefined otherwise, and always for pools that failed or need a
 * metadata check, and for pools the engine did not assemble.
 */
export async function grownDevices(
  pool: AssembledPool,
  status: PoolStatus,
  sectorsOf: (devno: string) => Promise<number> = sysfsSectors,
): Promise<DeviceGrowth | undefined> {
  const devices = pool.devices;
  if (!devices || !status.healthy || status.needsCheck) return undefined;
  const [dataSectors, metadataSectors] = await Promise.all([
    sectorsOf(devices.data),
    sectorsOf(devices.metadata),
  ]);
  const growth: DeviceGrowth = {
    dataBlocks: Math.floor((dataSectors * SECTOR_BYTES) / pool.blockBytes),
    metadataBlocks: Math.min(
      Math.floor((metadataSectors * SECTOR_BYTES) / METADATA_BLOCK_BYTES),
      MAX_METADATA_BLOCKS,
    ),
  };
  const metadataGrew = growth.metadataBlocks > status.metadataTotalBlocks;
  if (!metadataGrew && (growth.dataBlocks <= status.dataTotalBlocks || status.mode === "ro"))
    return undefined;
  if (devices.lastGrowAttempt === attemptKey(growth)) return undefined;
  return growth;
}

/**
 * Reloads the pool with a table as long as its (grown) data device and resumes it. Never shortens the
 * table. Returns a note for the log, or undefined when nothing grew. The caller holds the pool's lock, so
 * no pool message is sent while the pool is being swapped.
 */
export async function growPoolToDevices(
  pool: AssembledPool,
  status: PoolStatus,
  dm: Dmsetup,
  sectorsOf: (devno: string) => Promise<number> = sysfsSectors,
): Promise<string | undefined> {
  const growth = await grownDevices(pool, status, sectorsOf);
  if (!growth || !pool.devices) return undefined;
  pool.devices.lastGrowAttempt = attemptKey(growth);
  const table = parsePoolTable(await dm.table(pool.dmName));
  const lengthSectors = Math.max(table.lengthSectors, (growth.dataBlocks * pool.blockBytes) / SECTOR_BYTES);
  const line = [
    0,
    lengthSectors,
    "thin-pool",
    table.metadataDevice,
    table.dataDevice,
    table.blockSizeSectors,
    table.lowWaterMark,
    table.features.length,
    ...table.features,
  ].join(" ");
  await dm.reload(pool.dmName, line);
  await dm.resume(pool.dmName);
  return (
    `pool ${pool.dmName} reloaded for its grown devices: data ${status.dataTotalBlocks} -> ` +
    `${Math.max(growth.dataBlocks, status.dataTotalBlocks)} blocks, metadata ${status.metadataTotalBlocks} -> ` +
    `${Math.max(growth.metadataBlocks, status.metadataTotalBlocks)} blocks (was ${status.mode})`
  );
}

const attemptKey = (growth: DeviceGrowth): string => `${growth.dataBlocks}/${growth.metadataBlocks}`;
