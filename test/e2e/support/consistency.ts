// The checker the reliability suites share: does the store (one pool's rows in the state database) agree
// with the kernel (dm devices, their tables, the thin ids in the pool's metadata) and with the mount
// table? Returns what it found wrong, one line a problem, so a suite can print and count them.
import { isMountPoint } from "../../../src/node/mounts.js";
import { StateStore } from "../../../src/state/store.js";
import { DeviceState } from "../../../src/state/types.js";
import { parseDmInfo, parseThinTable } from "../../../src/thinpool/status.js";
import { sh } from "./vm-env.js";

export interface ConsistencyTarget {
  /** The state database, opened read-write for the duration of the check (WAL allows it beside a driver). */
  statePath: string;
  pool: string;
  /** The pool's metadata device, read by thin_ls through a metadata snapshot. */
  metadataDevice: string;
  /** Whether ids the engine quarantined are expected (engine tests that take ids behind its back). */
  allowQuarantined?: boolean;
}

export async function storeKernelProblems(target: ConsistencyTarget): Promise<string[]> {
  const problems: string[] = [];
  const poolDm = `thinpool-csi-${target.pool}`;
  const infos = parseDmInfo(await sh("dmsetup", ["info"])).filter((i) => i.name.startsWith("tpcsi-"));
  for (const i of infos.filter((x) => x.suspended)) problems.push(`suspended: ${i.name}`);
  const store = StateStore.open(target.statePath);
  try {
    const devices = store.listDevices().filter((d) => d.pool === target.pool);
    for (const d of devices) {
      if (d.pending !== null || ![DeviceState.Active, DeviceState.Inactive].includes(d.state))
        problems.push(`half-done or faulty row: ${d.name} ${d.state} ${d.lastError ?? ""}`);
    }
    const quarantined = store.listQuarantined(target.pool).map((q) => q.deviceId);
    if (!target.allowQuarantined) {
      for (const q of store.listQuarantined(target.pool))
        problems.push(`leaked (quarantined) id ${q.deviceId}: ${q.reason}`);
    }

    const active = devices.filter((d) => d.state === DeviceState.Active);
    const activeNames = new Set(active.map((d) => `tpcsi-${d.name}`));
    for (const i of infos)
      if (!activeNames.has(i.name)) problems.push(`dm device unknown to the store as active: ${i.name}`);
    for (const d of active) {
      if (!infos.some((i) => i.name === `tpcsi-${d.name}`)) {
        problems.push(`active row without dm device: ${d.name}`);
        continue;
      }
      const table = parseThinTable(await sh("dmsetup", ["table", `tpcsi-${d.name}`]));
      if (table.deviceId !== d.deviceId || table.lengthSectors * 512 !== d.sizeBytes)
        problems.push(
          `table of ${d.name} (id ${table.deviceId}, ${table.lengthSectors * 512} B) != row (id ${d.deviceId}, ${d.sizeBytes} B)`,
        );
    }

    await sh("dmsetup", ["message", poolDm, "0", "reserve_metadata_snap"]);
    let poolIds: number[];
    try {
      poolIds = (
        await sh("thin_ls", ["--metadata-snap", "--no-headers", "--format", "DEV", target.metadataDevice])
      )
        .split("\n")
        .filter((line) => line.trim() !== "")
        .map((line) => Number(line.trim()));
    } finally {
      await sh("dmsetup", ["message", poolDm, "0", "release_metadata_snap"]);
    }
    // A spare's row is written before its create_thin, so every spare id in the pool has a row; a row not
    // yet ready may be one whose create_thin is still in flight beside a running driver.
    const spares = store.listSpareIds(target.pool);
    for (const spare of spares)
      if (spare.ready && !poolIds.includes(spare.deviceId))
        problems.push(`ready spare ${spare.deviceId} is missing from the pool`);
    const known = new Set([
      ...devices.map((d) => d.deviceId),
      ...quarantined,
      ...spares.map((s) => s.deviceId),
    ]);
    for (const id of poolIds)
      if (!known.has(id)) problems.push(`thin id ${id} in the pool but not in the store`);
    for (const d of devices)
      if (!poolIds.includes(d.deviceId)) problems.push(`row ${d.name} points at missing id ${d.deviceId}`);

    for (const d of devices) {
      for (const p of store.getNodePaths(d.name, "stage"))
        if (!(await isMountPoint(p.path))) problems.push(`stage record without a mount: ${p.path}`);
    }
  } finally {
    store.close();
  }
  return problems;
}
