/**
 * Parsers for what dmsetup prints. Kept pure so they are unit-tested on real output lines
 * (see the kernel's Documentation/admin-guide/device-mapper/thin-provisioning.rst for the fields).
 */

export const SECTOR_BYTES = 512;
/** dm-thin metadata blocks are always 4 KiB. */
export const METADATA_BLOCK_BYTES = 4096;

export type NoSpaceMode = "error_if_no_space" | "queue_if_no_space";

export interface PoolStatus {
  /** False when the kernel reports "Fail": the pool is unusable until repaired. */
  healthy: boolean;
  transactionId: bigint;
  metadataUsedBlocks: number;
  metadataTotalBlocks: number;
  dataUsedBlocks: number;
  dataTotalBlocks: number;
  /** "rw", "ro" (metadata trouble, the kernel switched the pool read-only) or "out_of_data_space". */
  mode: "rw" | "ro" | "out_of_data_space";
  discardPassdown: boolean;
  noSpaceMode: NoSpaceMode;
  needsCheck: boolean;
}

/**
 * Parses one `dmsetup status <pool>` line:
 * `0 4194304 thin-pool 1 121/16384 0/32768 - rw no_discard_passdown queue_if_no_space - 1024`
 */
export function parsePoolStatus(line: string): PoolStatus {
  const fields = line.trim().split(/\s+/);
  if (fields[2] !== "thin-pool") throw new Error(`not a thin-pool status line: '${line.trim()}'`);
  const rest = fields.slice(3);
  if (rest[0] === "Fail" || rest[0] === "Error") {
    return {
      healthy: false,
      transactionId: 0n,
      metadataUsedBlocks: 0,
      metadataTotalBlocks: 0,
      dataUsedBlocks: 0,
      dataTotalBlocks: 0,
      mode: "ro",
      discardPassdown: false,
      noSpaceMode: "queue_if_no_space",
      needsCheck: true,
    };
  }
  const [txid, meta, data, , mode, ...flags] = rest;
  if (txid === undefined || meta === undefined || data === undefined || mode === undefined) {
    throw new Error(`truncated thin-pool status line: '${line.trim()}'`);
  }
  const [metaUsed, metaTotal] = parseFraction(meta, line);
  const [dataUsed, dataTotal] = parseFraction(data, line);
  if (mode !== "rw" && mode !== "ro" && mode !== "out_of_data_space") {
    throw new Error(`unknown thin-pool mode '${mode}' in '${line.trim()}'`);
  }
  return {
    healthy: true,
    transactionId: BigInt(txid),
    metadataUsedBlocks: metaUsed,
    metadataTotalBlocks: metaTotal,
    dataUsedBlocks: dataUsed,
    dataTotalBlocks: dataTotal,
    mode,
    discardPassdown: flags.includes("discard_passdown"),
    noSpaceMode: flags.includes("error_if_no_space") ? "error_if_no_space" : "queue_if_no_space",
    needsCheck: flags.includes("needs_check"),
  };
}

function parseFraction(text: string, line: string): [number, number] {
  const match = /^(\d+)\/(\d+)$/.exec(text);
  if (!match) throw new Error(`bad used/total field '${text}' in '${line.trim()}'`);
  return [Number(match[1]), Number(match[2])];
}

export interface ThinStatus {
  healthy: boolean;
  mappedSectors: number;
}

/** Parses `dmsetup status <thin>`: `0 2097152 thin 20480 20479` or `0 2097152 thin 0 -` or `... thin Fail`. */
export function parseThinStatus(line: string): ThinStatus {
  const fields = line.trim().split(/\s+/);
  if (fields[2] !== "thin") throw new Error(`not a thin status line: '${line.trim()}'`);
  if (fields[3] === "Fail") return { healthy: false, mappedSectors: 0 };
  const mapped = Number(fields[3]);
  if (!Number.isSafeInteger(mapped)) throw new Error(`bad mapped sectors in '${line.trim()}'`);
  return { healthy: true, mappedSectors: mapped };
}

export interface PoolTable {
  lengthSectors: number;
  metadataDevice: string;
  dataDevice: string;
  blockSizeSectors: number;
  lowWaterMark: number;
  features: string[];
}

/** Parses `dmsetup table <pool>`: `0 4194304 thin-pool 254:1 254:0 128 0 1 error_if_no_space`. */
export function parsePoolTable(line: string): PoolTable {
  const fields = line.trim().split(/\s+/);
  if (fields[2] !== "thin-pool") throw new Error(`not a thin-pool table: '${line.trim()}'`);
  const [, length, , meta, data, block, lowWater, featureCount, ...features] = fields;
  if (!length || !meta || !data || !block || !lowWater)
    throw new Error(`truncated thin-pool table: '${line}'`);
  return {
    lengthSectors: Number(length),
    metadataDevice: meta,
    dataDevice: data,
    blockSizeSectors: Number(block),
    lowWaterMark: Number(lowWater),
    features: features.slice(0, Number(featureCount ?? 0)),
  };
}

export interface ThinTable {
  lengthSectors: number;
  poolDevice: string;
  deviceId: number;
}

/** Parses `dmsetup table <thin>`: `0 2097152 thin 254:2 7`. */
export function parseThinTable(line: string): ThinTable {
  const fields = line.trim().split(/\s+/);
  if (fields[2] !== "thin" || !fields[1] || !fields[3] || !fields[4]) {
    throw new Error(`not a thin table: '${line.trim()}'`);
  }
  return { lengthSectors: Number(fields[1]), poolDevice: fields[3], deviceId: Number(fields[4]) };
}

export interface DmInfo {
  name: string;
  /** "major:minor" */
  devno: string;
  suspended: boolean;
  deferredRemove: boolean;
  liveTable: boolean;
  openCount: number;
  uuid: string;
}

/** The columns `dmsetup info -c` is asked for: mangled names cannot hold the separator or a newline. */
export const DM_INFO_COLUMNS = "mangled_name,mangled_uuid,attr,open,major,minor";
/** Not on udev's whitelist of name characters, so a mangled name or uuid shows it as `\x7c`. */
export const DM_INFO_SEPARATOR = "|";

/**
 * Parses `dmsetup info -c --noheadings --separator '|' -o <DM_INFO_COLUMNS>` lines, e.g.
 * `tpcsi-v1|THINPOOL-CSI-v1|L-sw|0|253|4`. The attr column is (L)ive table, (I)nactive table,
 * (s)uspended, (r)ead-only or read-(w)rite; it has no deferred-removal flag, so `deferredRemove` is false
 * here and a caller that needs it reads the long form (see Dmsetup.infoAll).
 */
export function parseDmColumns(text: string): DmInfo[] {
  const devices: DmInfo[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(DM_INFO_SEPARATOR).map((field) => field.trim());
    if (fields.length !== 6) continue;
    const [name, uuid, attr, open, major, minor] = fields as [string, string, string, string, string, string];
    if (!name || !/^\d+$/.test(open) || !/^\d+$/.test(major) || !/^\d+$/.test(minor)) continue;
    devices.push({
      name,
      devno: `${major}:${minor}`,
      suspended: attr[2] === "s",
      deferredRemove: false,
      liveTable: attr[0] === "L",
      openCount: Number(open),
      uuid,
    });
  }
  return devices;
}

/**
 * Parses plain `dmsetup info [name]` output: blocks of "Key: value" lines separated by blank lines.
 * The only form that shows a pending deferred removal; it names it, and suspension, in words that have
 * been stable across libdevmapper releases.
 */
export function parseDmInfo(text: string): DmInfo[] {
  const devices: DmInfo[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of block.split("\n")) {
      const colon = line.indexOf(":");
      if (colon > 0) fields.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    const name = fields.get("Name");
    if (!name) continue;
    const state = fields.get("State") ?? "";
    const devno = (fields.get("Major, minor") ?? "").replace(/\s+/g, "").replace(",", ":");
    devices.push({
      name,
      devno,
      suspended: /SUSPENDED/.test(state),
      deferredRemove: /DEFERRED REMOVE/.test(state),
      liveTable: /LIVE/.test(fields.get("Tables present") ?? ""),
      openCount: Number(fields.get("Open count") ?? 0),
      uuid: fields.get("UUID") ?? "",
    });
  }
  return devices;
}

/**
 * Parses multi-device `dmsetup table` / `dmsetup status` output, where each line is
 * `<name>: <start> <length> <target> <args...>`. Single-segment devices only (ours always are).
 */
export function parseNamedLines(text: string): Map<string, string> {
  const lines = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const match = /^(\S+): (.*)$/.exec(raw.trim());
    if (match && match[1] && match[2] !== undefined) lines.set(match[1], match[2]);
  }
  return lines;
}
