/**
 * Which node holds the source of a restore (a VolumeSnapshot) or a clone (a PVC). A thin snapshot or
 * clone can only be made in the pool that holds its origin, so that node is the only one where the
 * provisioner can create the new volume.
 *
 * - VolumeSnapshot -> its bound VolumeSnapshotContent -> `status.snapshotHandle` (or, for a pre-provisioned
 *   content, `spec.source.snapshotHandle`; for a snapshot not cut yet, the source `volumeHandle`).
 * - PVC -> its PV -> the PV's node affinity on the driver's topology key (what the provisioner wrote from
 *   CreateVolume's accessible_topology), else the `volumeHandle`.
 * Ids name their node (`<device>@<node>`, src/controller/ids.ts); a node name too long for an id is stored
 * as `#<hash>`, which is matched against the cluster's Nodes.
 */
import type {
  V1PersistentVolume,
  V1PersistentVolumeClaim,
  V1TypedObjectReference,
} from "@kubernetes/client-node";

import { nodeTag, parseId, type IdKind } from "../controller/ids.js";
import { isNotFound, type KubeClients } from "../kube/index.js";

export const SNAPSHOT_GROUP = "snapshot.storage.k8s.io";
const SNAPSHOT_VERSION = "v1";

export type SourceLookup =
  /** The source is on `node`. */
  | { readonly state: "found"; readonly source: string; readonly node: string }
  /** Not known yet (snapshot not bound or not cut, source PVC not bound): look again later. */
  | { readonly state: "pending"; readonly source: string; readonly reason: string }
  /** It will never resolve as things stand (missing, another driver's, unreadable id): tell the user. */
  | { readonly state: "unusable"; readonly source: string; readonly reason: string };

/** The restore or clone source of a claim, if it has one this controller understands. */
export function dataSourceOf(pvc: V1PersistentVolumeClaim): V1TypedObjectReference | undefined {
  const ref = pvc.spec?.dataSourceRef ?? pvc.spec?.dataSource;
  if (ref === undefined) return undefined;
  const group = ref.apiGroup ?? "";
  if (ref.kind === "VolumeSnapshot" && group === SNAPSHOT_GROUP) return ref;
  if (ref.kind === "PersistentVolumeClaim" && group === "") return ref;
  return undefined;
}

interface SnapshotContent {
  spec?: {
    driver?: string;
    source?: { snapshotHandle?: string; volumeHandle?: string };
  };
  status?: { snapshotHandle?: string };
}

interface VolumeSnapshot {
  spec?: { source?: { volumeSnapshotContentName?: string } };
  status?: { boundVolumeSnapshotContentName?: string };
}

export class SourceNodeResolver {
  constructor(
    private readonly kube: KubeClients,
    private readonly driverName: string,
    private readonly topologyKey: string,
  ) {}

  async resolve(pvc: V1PersistentVolumeClaim, ref: V1TypedObjectReference): Promise<SourceLookup> {
    const namespace = ref.namespace ?? pvc.metadata?.namespace ?? "default";
    return ref.kind === "VolumeSnapshot"
      ? this.fromSnapshot(namespace, ref.name)
      : this.fromClaim(namespace, ref.name);
  }

  private async fromSnapshot(namespace: string, name: string): Promise<SourceLookup> {
    const source = `VolumeSnapshot ${namespace}/${name}`;
    const snapshot = (await this.getOrUndefined(() =>
      this.kube.custom.getNamespacedCustomObject({
        group: SNAPSHOT_GROUP,
        version: SNAPSHOT_VERSION,
        namespace,
        plural: "volumesnapshots",
        name,
      }),
    )) as VolumeSnapshot | undefined;
    // Missing now may mean "not created yet" (a restore applied with its snapshot): keep waiting.
    if (snapshot === undefined)
      return { state: "pending", source, reason: "the VolumeSnapshot does not exist (yet)" };
    const contentName =
      snapshot.status?.boundVolumeSnapshotContentName ?? snapshot.spec?.source?.volumeSnapshotContentName;
    if (contentName === undefined) {
      return {
        state: "pending",
        source,
        reason: "the VolumeSnapshot is not bound to a VolumeSnapshotContent yet",
      };
    }
    const content = (await this.getOrUndefined(() =>
      this.kube.custom.getClusterCustomObject({
        group: SNAPSHOT_GROUP,
        version: SNAPSHOT_VERSION,
        plural: "volumesnapshotcontents",
        name: contentName,
      }),
    )) as SnapshotContent | undefined;
    if (content === undefined) {
      return {
        state: "pending",
        source,
        reason: `VolumeSnapshotContent ${contentName} does not exist (yet)`,
      };
    }
    if (content.spec?.driver !== this.driverName) {
      return {
        state: "unusable",
        source,
        reason: `it was taken by driver ${String(content.spec?.driver)}, not ${this.driverName}`,
      };
    }
    const snapshotHandle = content.status?.snapshotHandle ?? content.spec.source?.snapshotHandle;
    if (snapshotHandle !== undefined) return this.fromHandle(source, snapshotHandle, "snapshot");
    const volumeHandle = content.spec.source?.volumeHandle;
    if (volumeHandle !== undefined) return this.fromHandle(source, volumeHandle, "volume");
    return { state: "pending", source, reason: `VolumeSnapshotContent ${contentName} has no handle yet` };
  }

  private async fromClaim(namespace: string, name: string): Promise<SourceLookup> {
    const source = `PersistentVolumeClaim ${namespace}/${name}`;
    const claim = await this.getOrUndefined(() =>
      this.kube.core.readNamespacedPersistentVolumeClaim({ name, namespace }),
    );
    if (claim === undefined)
      return { state: "pending", source, reason: "the source claim does not exist (yet)" };
    const pvName = claim.spec?.volumeName;
    if (pvName === undefined || pvName === "") {
      return { state: "pending", source, reason: "the source claim is not bound to a volume yet" };
    }
    const pv = await this.getOrUndefined(() => this.kube.core.readPersistentVolume({ name: pvName }));
    if (pv === undefined)
      return { state: "pending", source, reason: `PersistentVolume ${pvName} does not exist` };
    if (pv.spec?.csi?.driver !== this.driverName) {
      return {
        state: "unusable",
        source,
        reason: `its volume ${pvName} is not of driver ${this.driverName}`,
      };
    }
    const fromAffinity = this.affinityNode(pv);
    if (fromAffinity !== undefined) return { state: "found", source, node: fromAffinity };
    return this.fromHandle(source, pv.spec.csi.volumeHandle, "volume");
  }

  /** The node named by the PV's required node affinity on the driver's topology key. */
  private affinityNode(pv: V1PersistentVolume): string | undefined {
    for (const term of pv.spec?.nodeAffinity?.required?.nodeSelectorTerms ?? []) {
      for (const expression of term.matchExpressions ?? []) {
        if (
          expression.key === this.topologyKey &&
          expression.operator === "In" &&
          expression.values?.length === 1
        ) {
          return expression.values[0];
        }
      }
    }
    return undefined;
  }

  private async fromHandle(source: string, handle: string, kind: IdKind): Promise<SourceLookup> {
    const parsed = parseId(handle, kind);
    if (parsed === undefined) {
      return { state: "unusable", source, reason: `handle ${handle} is not a ${kind} id of this driver` };
    }
    if (!parsed.node.startsWith("#")) return { state: "found", source, node: parsed.node };
    const nodes = await this.kube.core.listNode();
    const match = nodes.items.find((n) => nodeTag(n.metadata?.name ?? "", parsed.device) === parsed.node);
    if (match?.metadata?.name === undefined) {
      return {
        state: "unusable",
        source,
        reason: `no node of the cluster matches the node tag of ${handle}`,
      };
    }
    return { state: "found", source, node: match.metadata.name };
  }

  private async getOrUndefined<T>(read: () => Promise<T>): Promise<T | undefined> {
    try {
      return await read();
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }
}
