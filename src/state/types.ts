/** Lifecycle states of a thin device, persisted in the store. */
export enum DeviceState {
  /** Intent recorded, create_thin/create_snap not yet confirmed. */
  Creating = "Creating",
  /** Exists in the pool, no dm device. Snapshots stay here. */
  Inactive = "Inactive",
  Activating = "Activating",
  Active = "Active",
  Deactivating = "Deactivating",
  /** A grow is in flight; `pending` holds the target size. */
  Resizing = "Resizing",
  /** Delete intent recorded; finished on retry or at start-up. */
  Deleting = "Deleting",
  /** Could not be repaired automatically; `last_error` says why. Never deleted on a guess. */
  Faulty = "Faulty",
}

export type DeviceKind = "volume" | "snapshot";

/** The operation in flight, persisted before the kernel call (the intent). */
export type PendingOp =
  | { op: "create"; txid: number }
  | { op: "delete"; txid: number; discard: boolean }
  | { op: "resize"; sizeBytes: number; fromState: DeviceState.Active | DeviceState.Inactive };

export interface DeviceRecord {
  name: string;
  pool: string;
  deviceId: number;
  kind: DeviceKind;
  sizeBytes: number;
  parent: string | null;
  state: DeviceState;
  pending: PendingOp | null;
  lastError: string | null;
  requestName: string | null;
  attributes: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
}

export interface PoolRecord {
  name: string;
  dmName: string;
  source: Record<string, unknown>;
  ownsTransactionId: boolean;
  transactionId: number;
  blockBytes: number;
  createdAt: string;
  updatedAt: string;
}

export interface QuarantinedId {
  pool: string;
  deviceId: number;
  reason: string;
  since: string;
}

/** A thin id created ahead of need (never activated, so it holds no data). */
export interface SpareId {
  deviceId: number;
  /** false: create_thin was announced but its outcome is not recorded. */
  ready: boolean;
}

export type NodePathRole = "stage" | "publish";

export interface NodePathRecord {
  volume: string;
  role: NodePathRole;
  path: string;
  args: Record<string, unknown>;
  createdAt: string;
}
