/**
 * In-flight operation locks. The CSI spec lets a plugin answer ABORTED when a second call arrives for a
 * volume that already has one in flight (the CO retries with back-off); that is cheaper and safer than
 * queueing behind a slow kernel operation or letting two calls race on one thin device.
 *
 * The keys each RPC takes are in ONE table below. RPCs absent from it only read, and take no lock, so
 * that kubelet's periodic NodeGetVolumeStats or the provisioner's GetCapacity never get ABORTED.
 */
import type { ControllerMethod, ControllerRequest, NodeMethod, NodeRequest } from "../csi/types.js";
import type { VolumeContentSource__Output } from "../generated/csi/v1/VolumeContentSource.js";

export type LockKind = "volume" | "volume name" | "snapshot" | "snapshot name";

export interface LockKey {
  readonly kind: LockKind;
  readonly id: string;
}

function key(kind: LockKind, id: string | undefined): LockKey[] {
  // An empty id gets no lock: the handler answers INVALID_ARGUMENT for the missing field.
  return id === undefined || id === "" ? [] : [{ kind, id }];
}

function contentSourceKeys(source: VolumeContentSource__Output | null): LockKey[] {
  return [...key("snapshot", source?.snapshot?.snapshot_id), ...key("volume", source?.volume?.volume_id)];
}

type ControllerLockKeyTable = {
  readonly [M in ControllerMethod]?: (request: ControllerRequest<M>) => LockKey[];
};
type NodeLockKeyTable = { readonly [M in NodeMethod]?: (request: NodeRequest<M>) => LockKey[] };

export const CONTROLLER_LOCK_KEYS: ControllerLockKeyTable = {
  // By name (the volume has no id yet) and by source, so the snapshot or volume being copied cannot be
  // deleted or changed underneath.
  CreateVolume: (request) => [
    ...key("volume name", request.name),
    ...contentSourceKeys(request.volume_content_source),
  ],
  DeleteVolume: (request) => key("volume", request.volume_id),
  ControllerPublishVolume: (request) => key("volume", request.volume_id),
  ControllerUnpublishVolume: (request) => key("volume", request.volume_id),
  ControllerExpandVolume: (request) => key("volume", request.volume_id),
  ControllerModifyVolume: (request) => key("volume", request.volume_id),
  // The source volume too: a snapshot suspends it briefly, which must not interleave with node operations.
  CreateSnapshot: (request) => [
    ...key("snapshot name", request.name),
    ...key("volume", request.source_volume_id),
  ],
  DeleteSnapshot: (request) => key("snapshot", request.snapshot_id),
};

export const NODE_LOCK_KEYS: NodeLockKeyTable = {
  NodeStageVolume: (request) => key("volume", request.volume_id),
  NodeUnstageVolume: (request) => key("volume", request.volume_id),
  NodePublishVolume: (request) => key("volume", request.volume_id),
  NodeUnpublishVolume: (request) => key("volume", request.volume_id),
  NodeExpandVolume: (request) => key("volume", request.volume_id),
};

export function describeLockKey(lockKey: LockKey): string {
  return `${lockKey.kind} ${lockKey.id}`;
}

export type LockAttempt =
  | { readonly acquired: true; readonly release: () => void }
  | { readonly acquired: false; readonly conflict: LockKey };

/** The set of keys held by in-flight calls. Single-threaded, so check-then-add needs no atomics. */
export class OperationLocks {
  private readonly held = new Set<string>();

  tryAcquire(keys: readonly LockKey[]): LockAttempt {
    const names = [...new Set(keys.map((lockKey) => `${lockKey.kind}\u0000${lockKey.id}`))];
    const conflictIndex = names.findIndex((name) => this.held.has(name));
    if (conflictIndex >= 0) {
      const [kind, id] = (names[conflictIndex] as string).split("\u0000") as [LockKind, string];
      return { acquired: false, conflict: { kind, id } };
    }
    for (const name of names) {
      this.held.add(name);
    }
    let released = false;
    return {
      acquired: true,
      release: () => {
        if (!released) {
          released = true;
          for (const name of names) {
            this.held.delete(name);
          }
        }
      },
    };
  }

  get size(): number {
    return this.held.size;
  }
}
