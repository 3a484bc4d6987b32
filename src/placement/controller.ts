/**
 * The placement controller: steers a claim that restores a VolumeSnapshot or clones a PVC of this driver
 * to the node that holds its source, by setting `volume.kubernetes.io/selected-node` before the volume is
 * provisioned. The per-node csi-provisioner (`--node-deployment`) only provisions claims whose selected
 * node is its own node, and kube-scheduler only places a pod of an unbound claim that has a selected node
 * on that node; the PV it gets carries the node's affinity. One replica acts per cluster (Lease, see
 * command.ts).
 *
 * What it does with a pending claim of one of the driver's StorageClasses (Immediate or
 * WaitForFirstConsumer) whose data source is a VolumeSnapshot or a PVC:
 * - no selected node: sets it to the source's node (Normal event);
 * - selected node = the source's node: leaves it alone;
 * - another selected node (the scheduler's pick for a pod, or an Immediate claim taken by another node's
 *   provisioner): replaces it with the source's node (Warning event saying why a pod that cannot run there
 *   stays Pending). The driver on the wrong node refuses CreateVolume with RESOURCE_EXHAUSTED anyway, so
 *   nothing can be created there; the API server's optimistic lock (resourceVersion) keeps this from
 *   racing with the provisioner's own update of the claim;
 * - source not known yet: waits (next change of the claim or next resync); source unusable, or its node
 *   gone from the cluster: a Warning event, no change.
 */
import { Watch, type V1PersistentVolumeClaim, type V1StorageClass } from "@kubernetes/client-node";
import type { Logger } from "pino";

import { errorMessage } from "../util/errors.js";
import { MERGE_PATCH, isConflict, isNotFound, type EventRecorder, type KubeClients } from "../kube/index.js";
import { SourceNodeResolver, dataSourceOf } from "./source-node.js";

export const SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node";

/** Event reasons on the claim (`kubectl describe pvc`). */
export const REASON_PLACED = "PlacedOnSourceNode";
export const REASON_OVERRIDDEN = "SelectedNodeReplaced";
export const REASON_SOURCE_UNUSABLE = "RestoreSourceUnusable";
export const REASON_SOURCE_NODE_MISSING = "SourceNodeMissing";

export type Outcome =
  "ignored" | "already-placed" | "placed" | "replaced" | "pending" | "unusable" | "conflict";

export interface PlacementControllerOptions {
  readonly kube: KubeClients;
  readonly driverName: string;
  /** `<driver>/node`, the key of the PVs' node affinity. */
  readonly topologyKey: string;
  readonly events: EventRecorder;
  readonly logger: Logger;
  /** Full re-list of claims (catches sources that became ready, and missed watch events). */
  readonly resyncPeriodMs: number;
  /** Wait before retrying a claim after a conflict or an API error. */
  readonly retryDelayMs?: number;
}

export class PlacementController {
  private readonly resolver: SourceNodeResolver;
  private classes = new Map<string, V1StorageClass>();
  private readonly queue = new Set<string>();
  private draining: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly options: PlacementControllerOptions) {
    this.resolver = new SourceNodeResolver(options.kube, options.driverName, options.topologyKey);
  }

  /** Decides and acts on one claim. Exposed for tests; `run` calls it for every queued claim. */
  async reconcile(pvc: V1PersistentVolumeClaim): Promise<Outcome> {
    const { logger } = this.options;
    const name = pvc.metadata?.name ?? "";
    const namespace = pvc.metadata?.namespace ?? "default";
    if ((pvc.spec?.volumeName ?? "") !== "" || pvc.metadata?.deletionTimestamp !== undefined)
      return "ignored";
    const ref = dataSourceOf(pvc);
    if (ref === undefined) return "ignored";
    const storageClass = await this.storageClass(pvc.spec?.storageClassName);
    if (storageClass?.provisioner !== this.options.driverName) return "ignored";

    const lookup = await this.resolver.resolve(pvc, ref);
    const claim = {
      kind: "PersistentVolumeClaim",
      name,
      namespace,
      uid: pvc.metadata?.uid,
      apiVersion: "v1",
    };
    if (lookup.state === "pending") {
      logger.debug(
        { pvc: `${namespace}/${name}`, source: lookup.source, reason: lookup.reason },
        "source not known yet",
      );
      return "pending";
    }
    if (lookup.state === "unusable") {
      await this.options.events.recordEvent(
        claim,
        "Warning",
        REASON_SOURCE_UNUSABLE,
        `cannot place this restore/clone: ${lookup.source}: ${lookup.reason}`,
      );
      return "unusable";
    }
    const node = lookup.node;
    const selected = pvc.metadata?.annotations?.[SELECTED_NODE_ANNOTATION];
    if (selected === node) return "already-placed";
    if (!(await this.nodeExists(node))) {
      await this.options.events.recordEvent(
        claim,
        "Warning",
        REASON_SOURCE_NODE_MISSING,
        `${lookup.source} is on node ${node}, which is not in the cluster: the restore/clone can only be created there`,
      );
      return "unusable";
    }
    try {
      await this.options.kube.core.patchNamespacedPersistentVolumeClaim(
        {
          name,
          namespace,
          // The resourceVersion makes the patch fail (409) if the claim changed since it was read.
          body: {
            metadata: {
              resourceVersion: pvc.metadata?.resourceVersion,
              annotations: { [SELECTED_NODE_ANNOTATION]: node },
            },
          },
        },
        MERGE_PATCH,
      );
    } catch (error) {
      if (isConflict(error) || isNotFound(error)) return "conflict";
      throw error;
    }
    const why = `${lookup.source} is on node ${node}, and a restore or clone can only be created in the thin pool of its source`;
    if (selected === undefined || selected === "") {
      logger.info(
        { pvc: `${namespace}/${name}`, node, source: lookup.source },
        "selected node set to the source's node",
      );
      await this.options.events.recordEvent(
        claim,
        "Normal",
        REASON_PLACED,
        `selected node set to ${node}: ${why}`,
      );
      return "placed";
    }
    logger.info(
      { pvc: `${namespace}/${name}`, node, was: selected, source: lookup.source },
      "selected node replaced",
    );
    const byWhom =
      storageClass.volumeBindingMode === "WaitForFirstConsumer"
        ? `the scheduler had selected node ${selected} for a pod using this claim`
        : `node ${selected} had claimed it`;
    await this.options.events.recordEvent(
      claim,
      "Warning",
      REASON_OVERRIDDEN,
      `${byWhom}, but ${why}: selected node changed to ${node}. ` +
        `A pod that cannot run on ${node} (nodeSelector, affinity, taints, resources) stays Pending.`,
    );
    return "replaced";
  }

  /** Lists the driver's classes and every claim, and reconciles the candidates. */
  async syncAll(): Promise<string | undefined> {
    await this.refreshClasses();
    const list = await this.options.kube.core.listPersistentVolumeClaimForAllNamespaces();
    for (const pvc of list.items) {
      if (isCandidate(pvc)) this.enqueue(pvc);
    }
    await this.drain();
    return list.metadata?.resourceVersion;
  }

  /** Acts until `signal` aborts: a full sync now and every resync period, and claims as they change. */
  async run(signal: AbortSignal): Promise<void> {
    const { logger, resyncPeriodMs } = this.options;
    this.stopped = false;
    let watch: AbortController | undefined;
    let watchRestart: NodeJS.Timeout | undefined;
    const startWatch = async (resourceVersion: string | undefined): Promise<void> => {
      if (signal.aborted) return;
      try {
        watch = await new Watch(this.options.kube.config).watch(
          "/api/v1/persistentvolumeclaims",
          resourceVersion === undefined ? {} : { resourceVersion },
          (_phase: string, object: V1PersistentVolumeClaim) => {
            if (isCandidate(object)) {
              this.enqueue(object);
              void this.drain();
            }
          },
          (error: unknown) => {
            if (signal.aborted) return;
            if (error !== null && error !== undefined)
              logger.debug({ err: errorMessage(error) }, "claim watch ended");
            // The resync covers what happened in between.
            watchRestart = setTimeout(() => void startWatch(undefined), this.options.retryDelayMs ?? 1000);
          },
        );
      } catch (error) {
        logger.warn({ err: errorMessage(error) }, "cannot watch claims");
        watchRestart = setTimeout(() => void startWatch(undefined), this.options.retryDelayMs ?? 1000);
      }
    };
    const sync = async (): Promise<string | undefined> => {
      try {
        return await this.syncAll();
      } catch (error) {
        logger.warn({ err: errorMessage(error) }, "claim resync failed");
        return undefined;
      }
    };
    await startWatch(await sync());
    const resync = setInterval(() => void sync(), resyncPeriodMs);
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve(), { once: true });
    });
    this.stopped = true;
    clearInterval(resync);
    clearTimeout(watchRestart);
    watch?.abort();
    await this.draining;
  }

  private enqueue(pvc: V1PersistentVolumeClaim): void {
    this.queue.add(`${pvc.metadata?.namespace ?? "default"}/${pvc.metadata?.name ?? ""}`);
  }

  /** Works the queue one claim at a time (restores are rare; order does not matter). */
  private drain(): Promise<void> {
    this.draining ??= this.work().finally(() => {
      this.draining = undefined;
    });
    return this.draining;
  }

  private async work(): Promise<void> {
    while (this.queue.size > 0 && !this.stopped) {
      const key = this.queue.values().next().value as string;
      this.queue.delete(key);
      const [namespace = "", name = ""] = key.split("/");
      let outcome: Outcome | "failed";
      try {
        // Fresh from the API: the watch's copy or the list may be stale by now.
        const pvc = await this.options.kube.core.readNamespacedPersistentVolumeClaim({ name, namespace });
        outcome = await this.reconcile(pvc);
      } catch (error) {
        if (isNotFound(error)) continue;
        this.options.logger.warn({ pvc: key, err: errorMessage(error) }, "placement of a claim failed");
        outcome = "failed";
      }
      if (outcome === "conflict" || outcome === "failed") {
        setTimeout(() => {
          if (this.stopped) return;
          this.queue.add(key);
          void this.drain();
        }, this.options.retryDelayMs ?? 1000).unref();
      }
    }
  }

  private async storageClass(name: string | undefined): Promise<V1StorageClass | undefined> {
    if (name === undefined || name === "") return undefined;
    if (!this.classes.has(name)) await this.refreshClasses();
    return this.classes.get(name);
  }

  private async refreshClasses(): Promise<void> {
    const list = await this.options.kube.storage.listStorageClass();
    this.classes = new Map(list.items.map((c) => [c.metadata?.name ?? "", c]));
  }

  private async nodeExists(node: string): Promise<boolean> {
    try {
      await this.options.kube.core.readNode({ name: node });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }
}

/** A claim worth a look: not bound yet, with a data source. The rest is decided in `reconcile`. */
function isCandidate(pvc: V1PersistentVolumeClaim): boolean {
  return (pvc.spec?.volumeName ?? "") === "" && dataSourceOf(pvc) !== undefined;
}
