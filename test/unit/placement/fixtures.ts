/** Cluster objects for the placement tests, written into the fake API server. */
import { pino, type Logger } from "pino";

import { makeId } from "../../../src/controller/ids.js";
import type { FakeKubeApi, KubeObject } from "../../support/fake-kube-api.js";

export const DRIVER = "thinpool.csi.dev";
export const TOPOLOGY_KEY = `${DRIVER}/node`;
export const SELECTED = "volume.kubernetes.io/selected-node";
export const SOURCE_VOLUME_ID = makeId("v-0123456789abcdef01234567", "worker-1");
export const SNAPSHOT_ID = makeId("s-89abcdef0123456789abcdef", "worker-2");

/** A logger that keeps its lines, to assert on what a replica did. */
export function collectingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: pino({ level: "debug" }, { write: (line: string) => lines.push(line) }), lines };
}

export function seedCluster(api: FakeKubeApi): void {
  for (const name of ["worker-1", "worker-2", "worker-3"]) {
    api.put({ apiVersion: "v1", kind: "Node", metadata: { name, labels: { [TOPOLOGY_KEY]: name } } });
  }
  const storageClass = (name: string, provisioner: string, volumeBindingMode: string): KubeObject => ({
    apiVersion: "storage.k8s.io/v1",
    kind: "StorageClass",
    metadata: { name },
    provisioner,
    volumeBindingMode,
  });
  api.put(storageClass("thin-wffc", DRIVER, "WaitForFirstConsumer"));
  api.put(storageClass("thin-immediate", DRIVER, "Immediate"));
  api.put(storageClass("other", "other.csi.example.com", "WaitForFirstConsumer"));

  api.put(sourcePv("pv-src", SOURCE_VOLUME_ID, "worker-1"));
  api.put({
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: { name: "src", namespace: "apps" },
    spec: { storageClassName: "thin-wffc", volumeName: "pv-src", accessModes: ["ReadWriteOnce"] },
    status: { phase: "Bound" },
  });
  api.put({
    apiVersion: "snapshot.storage.k8s.io/v1",
    kind: "VolumeSnapshot",
    metadata: { name: "snap", namespace: "apps" },
    spec: { source: { persistentVolumeClaimName: "src" }, volumeSnapshotClassName: "thinpool" },
    status: { boundVolumeSnapshotContentName: "snapcontent-1", readyToUse: true },
  });
  api.put(snapshotContent("snapcontent-1", SNAPSHOT_ID));
}

export function sourcePv(
  name: string,
  handle: string,
  node: string | undefined,
  driver = DRIVER,
): KubeObject {
  return {
    apiVersion: "v1",
    kind: "PersistentVolume",
    metadata: { name },
    spec: {
      csi: { driver, volumeHandle: handle },
      ...(node !== undefined
        ? {
            nodeAffinity: {
              required: {
                nodeSelectorTerms: [
                  { matchExpressions: [{ key: TOPOLOGY_KEY, operator: "In", values: [node] }] },
                ],
              },
            },
          }
        : {}),
    },
  };
}

export function snapshotContent(
  name: string,
  snapshotHandle: string | undefined,
  driver = DRIVER,
): KubeObject {
  return {
    apiVersion: "snapshot.storage.k8s.io/v1",
    kind: "VolumeSnapshotContent",
    metadata: { name },
    spec: { driver, source: { volumeHandle: SOURCE_VOLUME_ID }, deletionPolicy: "Delete" },
    ...(snapshotHandle !== undefined ? { status: { snapshotHandle, readyToUse: true } } : {}),
  };
}

export function claim(
  name: string,
  storageClassName: string,
  source: { kind: "VolumeSnapshot" | "PersistentVolumeClaim"; name: string } | undefined,
  selectedNode?: string,
): KubeObject {
  const ref =
    source === undefined
      ? undefined
      : {
          kind: source.kind,
          name: source.name,
          ...(source.kind === "VolumeSnapshot" ? { apiGroup: "snapshot.storage.k8s.io" } : {}),
        };
  return {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: {
      name,
      namespace: "apps",
      ...(selectedNode !== undefined ? { annotations: { [SELECTED]: selectedNode } } : {}),
    },
    spec: {
      storageClassName,
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: "1Gi" } },
      ...(ref !== undefined ? { dataSource: ref, dataSourceRef: ref } : {}),
    },
    status: { phase: "Pending" },
  };
}

/** Polls until `check` holds (no timing assertion: only a bound on how long to keep looking). */
export async function waitFor(check: () => boolean, what: string, limitMs = 10_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
