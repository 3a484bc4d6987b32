/**
 * The orphan report: thin devices of this node that no PersistentVolume or VolumeSnapshotContent refers to
 * any more (e.g. the node was down when their PV was deleted, and the provisioner gave up). Devices are
 * listed through the running driver's CSI socket and deleted through it too, so its locks, journal and
 * crash-safety apply; nothing here touches the store or device-mapper.
 *
 * The race with a create in progress: CreateVolume/CreateSnapshot make the device before the sidecar
 * writes the PV/VolumeSnapshotContent, so a device seconds old with no reference is normal. Devices younger
 * than the grace period are counted apart and never reported. Kubernetes is listed BEFORE the devices, so
 * an object written after the Kubernetes list can only belong to a device that is new by then too.
 */
import type { CsiClient } from "../csi/client.js";
import type { KubeClients } from "../kube/index.js";
import { SNAPSHOT_GROUP } from "../placement/source-node.js";

export interface OrphanDevice {
  readonly kind: "volume" | "snapshot";
  /** The CSI id (`<device>@<node>`). */
  readonly id: string;
  readonly sizeBytes: number;
  /** ISO time the driver created it, when known. */
  readonly createdAt: string | undefined;
  readonly ageSeconds: number | undefined;
}

export interface OrphanReport {
  readonly orphans: readonly OrphanDevice[];
  /** Devices with no reference but younger than the grace period. */
  readonly tooYoung: number;
  /** Devices the driver listed. */
  readonly scanned: number;
}

export interface FindOrphansOptions {
  readonly csi: CsiClient;
  readonly kube: KubeClients;
  readonly driverName: string;
  readonly graceMs: number;
  readonly now?: () => number;
}

interface ContentList {
  items?: Array<{
    spec?: { driver?: string; source?: { snapshotHandle?: string } };
    status?: { snapshotHandle?: string };
  }>;
}

export async function findOrphans(options: FindOrphansOptions): Promise<OrphanReport> {
  const { csi, kube, driverName, graceMs } = options;
  const now = (options.now ?? Date.now)();
  // Kubernetes first (see the header).
  const volumeRefs = new Set(
    (await kube.core.listPersistentVolume()).items
      .filter((pv) => pv.spec?.csi?.driver === driverName)
      .map((pv) => pv.spec?.csi?.volumeHandle ?? ""),
  );
  const contents = (await kube.custom.listClusterCustomObject({
    group: SNAPSHOT_GROUP,
    version: "v1",
    plural: "volumesnapshotcontents",
  })) as ContentList;
  const snapshotRefs = new Set(
    (contents.items ?? [])
      .filter((c) => c.spec?.driver === driverName)
      .map((c) => c.status?.snapshotHandle ?? c.spec?.source?.snapshotHandle ?? ""),
  );

  const devices: OrphanDevice[] = [];
  let token = "";
  do {
    const page = await csi.controller("ListVolumes", { max_entries: 0, starting_token: token });
    for (const entry of page.entries) {
      const volume = entry.volume;
      if (volume === null || volume === undefined) continue;
      devices.push(
        device(
          "volume",
          volume.volume_id,
          Number(volume.capacity_bytes),
          volume.volume_context["createdAt"],
          now,
        ),
      );
    }
    token = page.next_token;
  } while (token !== "");
  do {
    const page = await csi.controller("ListSnapshots", {
      max_entries: 0,
      starting_token: token,
      source_volume_id: "",
      snapshot_id: "",
      secrets: {},
    });
    for (const entry of page.entries) {
      const snapshot = entry.snapshot;
      if (snapshot === null || snapshot === undefined) continue;
      const created = snapshot.creation_time
        ? new Date(Number(snapshot.creation_time.seconds) * 1000).toISOString()
        : undefined;
      devices.push(device("snapshot", snapshot.snapshot_id, Number(snapshot.size_bytes), created, now));
    }
    token = page.next_token;
  } while (token !== "");

  const unreferenced = devices.filter((d) => !(d.kind === "volume" ? volumeRefs : snapshotRefs).has(d.id));
  // Unknown age counts as young: never report what might be being created.
  const old = unreferenced.filter((d) => d.ageSeconds !== undefined && d.ageSeconds * 1000 >= graceMs);
  return { orphans: old, tooYoung: unreferenced.length - old.length, scanned: devices.length };
}

export interface DeleteResult {
  readonly id: string;
  readonly error?: string;
}

/** Deletes the given orphans through the driver (DeleteVolume/DeleteSnapshot), one at a time. */
export async function deleteOrphans(
  csi: CsiClient,
  orphans: readonly OrphanDevice[],
): Promise<DeleteResult[]> {
  const results: DeleteResult[] = [];
  for (const orphan of orphans) {
    try {
      if (orphan.kind === "volume")
        await csi.controller("DeleteVolume", { volume_id: orphan.id, secrets: {} });
      else await csi.controller("DeleteSnapshot", { snapshot_id: orphan.id, secrets: {} });
      results.push({ id: orphan.id });
    } catch (error) {
      results.push({ id: orphan.id, error: (error as { details?: string }).details ?? String(error) });
    }
  }
  return results;
}

function device(
  kind: OrphanDevice["kind"],
  id: string,
  sizeBytes: number,
  createdAt: string | undefined,
  now: number,
): OrphanDevice {
  const created = createdAt === undefined ? NaN : Date.parse(createdAt);
  return {
    kind,
    id,
    sizeBytes,
    createdAt,
    ageSeconds: Number.isNaN(created) ? undefined : Math.max(0, Math.floor((now - created) / 1000)),
  };
}
