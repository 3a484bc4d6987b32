/**
 * The operator's status of one node, as the running driver serves it on its admin socket (GET /status)
 * and `thinpool-csi status` / `kubectl thinpool` print it: pools with usage and pressure, every volume and
 * snapshot with the Kubernetes object it belongs to, faulty devices with what to do, and the last
 * start-up reconciliation. The JSON shape below is the contract between the driver and those clients.
 */
import path from "node:path";

import { makeId } from "../controller/ids.js";
import type { DeviceRecord, QuarantinedId } from "../state/types.js";
import type { ReconcileReport } from "../thinpool/context.js";
import type { PoolPressureConfig } from "./config.js";
import { POOL_RESOURCES, type PoolResource, type PoolView, type PressureLevel } from "./pool-monitor.js";

/** The admin socket lives in the state directory, readable by root only: it is not on the network. */
export const ADMIN_SOCKET_NAME = "admin.sock";

export function adminSocketPath(stateDir: string): string {
  return path.join(stateDir, ADMIN_SOCKET_NAME);
}

/** Keys the sidecars add to CreateVolume/CreateSnapshot parameters with --extra-create-metadata. */
const PVC_NAME = "csi.storage.k8s.io/pvc/name";
const PVC_NAMESPACE = "csi.storage.k8s.io/pvc/namespace";
const SNAPSHOT_NAME = "csi.storage.k8s.io/volumesnapshot/name";
const SNAPSHOT_NAMESPACE = "csi.storage.k8s.io/volumesnapshot/namespace";

export interface ResourcePressureReport {
  readonly level: PressureLevel;
  /** null while the pool cannot be read. */
  readonly usedPercent: number | null;
  readonly warningPercent: number;
  readonly criticalPercent: number;
}

export interface PoolReport {
  readonly name: string;
  /** The kernel's mode; "failed" when the pool reports Fail, "unknown" when it cannot be read. */
  readonly mode: "rw" | "ro" | "out_of_data_space" | "failed" | "unknown";
  readonly needsCheck: boolean;
  /** Why the pool could not be read. */
  readonly error: string | null;
  readonly dataBytes: number | null;
  readonly dataUsedBytes: number | null;
  readonly metadataBytes: number | null;
  readonly metadataUsedBytes: number | null;
  readonly provisionedBytes: number | null;
  readonly provisionableBytes: number | null;
  readonly overProvisioningRatio: number;
  /** Why nothing more can be provisioned, when that is so. */
  readonly blockedBy: string | null;
  /**
   * Thin ids made ahead for CreateVolume (in the pool's metadata, in no volume yet); absent from drivers
   * older than spares.
   */
  readonly spareThinIds?: number;
  readonly pressure: Readonly<Record<PoolResource, ResourcePressureReport>>;
}

/** A Kubernetes object by namespace and name. */
export interface ObjectRef {
  readonly namespace: string;
  readonly name: string;
}

export interface DeviceReport {
  readonly name: string;
  /** The CSI volume_id or snapshot_id. */
  readonly csiId: string;
  readonly kind: "volume" | "snapshot";
  readonly pool: string;
  readonly state: string;
  readonly sizeBytes: number;
  /** Bytes the device has mapped in the pool; null when it is not active (no dm device to ask). */
  readonly usedBytes: number | null;
  /** The device it was made from (snapshot origin, or the snapshot a restore came from). */
  readonly parent: string | null;
  /** Volumes: the PersistentVolume name (CreateVolume's name). */
  readonly persistentVolume: string | null;
  /** Snapshots: the VolumeSnapshotContent name (CreateSnapshot's name). */
  readonly volumeSnapshotContent: string | null;
  /** Volumes: the claim, when the provisioner passed --extra-create-metadata. */
  readonly persistentVolumeClaim: ObjectRef | null;
  /** Snapshots: the VolumeSnapshot, when the snapshotter passed --extra-create-metadata. */
  readonly volumeSnapshot: ObjectRef | null;
  readonly lastError: string | null;
}

export interface FaultyDeviceReport {
  readonly name: string;
  readonly csiId: string;
  readonly kind: "volume" | "snapshot";
  readonly pool: string;
  readonly owner: string | null;
  readonly reason: string;
  /** What an operator can do about it. */
  readonly action: string;
}

export interface NodeStatusReport {
  readonly node: string;
  readonly driver: string;
  readonly version: string;
  readonly generatedAt: string;
  readonly ready: boolean;
  readonly notReadyReason: string | null;
  readonly pools: readonly PoolReport[];
  readonly devices: readonly DeviceReport[];
  readonly faulty: readonly FaultyDeviceReport[];
  readonly quarantinedIds: readonly QuarantinedId[];
  /** null until the start-up reconciliation has finished. */
  readonly lastReconcile: ReportedReconcile | null;
}

/**
 * A reconciliation report as it travels: `phasesMs` is absent from drivers older than the phase report,
 * which a newer kubectl plugin still reads from the nodes a rolling upgrade has not reached yet.
 */
export type ReportedReconcile = Omit<ReconcileReport, "phasesMs"> &
  Partial<Pick<ReconcileReport, "phasesMs">>;

export interface NodeStatusInput {
  readonly node: string;
  readonly driver: string;
  readonly version: string;
  readonly now: Date;
  readonly readiness: { readonly ready: boolean; readonly reason?: string | undefined };
  readonly pools: readonly PoolView[];
  readonly overProvisioningRatio: number;
  readonly thresholds: PoolPressureConfig;
  readonly devices: readonly DeviceRecord[];
  /** Mapped bytes of the active devices, by device name. */
  readonly mappedBytes: ReadonlyMap<string, number>;
  readonly quarantinedIds: readonly QuarantinedId[];
  /** Ready spare thin ids of a pool. */
  readonly spareThinIds: (pool: string) => number;
  readonly lastReconcile: ReconcileReport | undefined;
  /** Turns a device name into its dm name, for the commands in a faulty device's action. */
  readonly dmNameOf: (device: string) => string;
}

export function buildNodeStatus(input: NodeStatusInput): NodeStatusReport {
  const devices = input.devices.map((device) => deviceReport(device, input));
  return {
    node: input.node,
    driver: input.driver,
    version: input.version,
    generatedAt: input.now.toISOString(),
    ready: input.readiness.ready,
    notReadyReason: input.readiness.ready ? null : (input.readiness.reason ?? "not ready"),
    pools: input.pools.map((view) => poolReport(view, input)),
    devices,
    faulty: devices
      .filter((device) => device.state === "Faulty")
      .map((device) => faultyReport(device, input.dmNameOf(device.name))),
    quarantinedIds: input.quarantinedIds,
    lastReconcile: input.lastReconcile ?? null,
  };
}

function poolReport(view: PoolView, input: NodeStatusInput): PoolReport {
  const { status, usage } = view;
  const mode = status === undefined ? "unknown" : status.healthy ? status.mode : "failed";
  const pressure = {} as Record<PoolResource, ResourcePressureReport>;
  for (const resource of POOL_RESOURCES) {
    pressure[resource] = {
      level: view.pressure[resource].level,
      usedPercent: view.pressure[resource].usedPercent ?? null,
      ...input.thresholds[resource],
    };
  }
  return {
    name: view.pool,
    mode,
    needsCheck: status?.needsCheck ?? false,
    error: view.error ?? null,
    dataBytes: usage?.dataBytes ?? null,
    dataUsedBytes: usage?.dataUsedBytes ?? null,
    metadataBytes: usage?.metadataBytes ?? null,
    metadataUsedBytes: usage?.metadataUsedBytes ?? null,
    provisionedBytes: usage?.provisionedBytes ?? null,
    provisionableBytes: usage?.availableBytes ?? null,
    overProvisioningRatio: input.overProvisioningRatio,
    blockedBy: usage?.blockedBy ?? null,
    spareThinIds: input.spareThinIds(view.pool),
    pressure,
  };
}

function objectRef(metadata: unknown, nameKey: string, namespaceKey: string): ObjectRef | null {
  if (typeof metadata !== "object" || metadata === null) return null;
  const record = metadata as Record<string, unknown>;
  const name = record[nameKey];
  const namespace = record[namespaceKey];
  return typeof name === "string" && typeof namespace === "string" ? { namespace, name } : null;
}

function deviceReport(device: DeviceRecord, input: NodeStatusInput): DeviceReport {
  const metadata = device.attributes.metadata;
  const volume = device.kind === "volume";
  return {
    name: device.name,
    csiId: makeId(device.name, input.node),
    kind: device.kind,
    pool: device.pool,
    state: device.state,
    sizeBytes: device.sizeBytes,
    usedBytes: input.mappedBytes.get(device.name) ?? null,
    parent: device.parent,
    persistentVolume: volume ? device.requestName : null,
    volumeSnapshotContent: volume ? null : device.requestName,
    persistentVolumeClaim: volume ? objectRef(metadata, PVC_NAME, PVC_NAMESPACE) : null,
    volumeSnapshot: volume ? null : objectRef(metadata, SNAPSHOT_NAME, SNAPSHOT_NAMESPACE),
    lastError: device.lastError,
  };
}

/** The owner as an operator would look it up: PV or VolumeSnapshot(Content). */
export function ownerOf(device: DeviceReport): string | null {
  if (device.kind === "volume") {
    const claim = device.persistentVolumeClaim;
    const pv = device.persistentVolume === null ? null : `pv/${device.persistentVolume}`;
    return claim ? `${pv ?? "pv/?"} (pvc ${claim.namespace}/${claim.name})` : pv;
  }
  const snapshot = device.volumeSnapshot;
  const content =
    device.volumeSnapshotContent === null ? null : `volumesnapshotcontent/${device.volumeSnapshotContent}`;
  return snapshot
    ? `${content ?? "volumesnapshotcontent/?"} (volumesnapshot ${snapshot.namespace}/${snapshot.name})`
    : content;
}

/**
 * What to do about a faulty device, by the reason the engine recorded. The driver never deletes or
 * reuses a faulty device on its own (docs/RELIABILITY.md); deleting its PV or VolumeSnapshot does.
 */
export function faultyAction(reason: string, kind: "volume" | "snapshot", dmName: string): string {
  const owner = kind === "volume" ? "PersistentVolume" : "VolumeSnapshot";
  if (/missing from the pool's metadata/.test(reason)) {
    return `its thin device is gone from the pool, so its data is lost: restore it from a backup, then delete the ${owner} (the driver then removes the record)`;
  }
  if (/could not be resumed|suspended/.test(reason)) {
    return `its I/O may still be frozen: check 'dmsetup info ${dmName}' and run 'dmsetup resume ${dmName}' if it says SUSPENDED; copy the data off, then delete the ${owner} to clear the record`;
  }
  return `the data is still in the pool; see the error and the driver log, check 'dmsetup info ${dmName}' and 'dmsetup status' of the pool, fix the cause, copy the data off if it is needed, then delete the ${owner} to clear the record (the driver does not retry a faulty device)`;
}

function faultyReport(device: DeviceReport, dmName: string): FaultyDeviceReport {
  const reason = device.lastError ?? "unknown reason";
  return {
    name: device.name,
    csiId: device.csiId,
    kind: device.kind,
    pool: device.pool,
    owner: ownerOf(device),
    reason,
    action: faultyAction(reason, device.kind, dmName),
  };
}
