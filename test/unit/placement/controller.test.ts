/**
 * The placement controller against the local fake API server: restores (VolumeSnapshot ->
 * VolumeSnapshotContent -> handle) and clones (PVC -> PV -> node affinity / handle), Immediate and
 * WaitForFirstConsumer classes, selected nodes already right or wrong, other drivers, sources not ready,
 * missing nodes, and the watch loop. Not a real cluster: no scheduler or provisioner reacts here.
 */
import assert from "node:assert/strict";
import type { V1PersistentVolumeClaim } from "@kubernetes/client-node";

import { makeId } from "../../../src/controller/ids.js";
import { EventRecorder, makeKubeClients, type KubeClients } from "../../../src/kube/index.js";
import {
  PlacementController,
  REASON_OVERRIDDEN,
  REASON_PLACED,
  REASON_SOURCE_NODE_MISSING,
  REASON_SOURCE_UNUSABLE,
} from "../../../src/placement/controller.js";
import { FakeKubeApi } from "../../support/fake-kube-api.js";
import {
  DRIVER,
  SELECTED,
  TOPOLOGY_KEY,
  claim,
  collectingLogger,
  seedCluster,
  snapshotContent,
  sourcePv,
  waitFor,
} from "./fixtures.js";

describe("placement controller (fake API server)", () => {
  let api: FakeKubeApi;
  let kube: KubeClients;
  let controller: PlacementController;

  beforeEach(async () => {
    api = new FakeKubeApi();
    await api.start();
    seedCluster(api);
    kube = makeKubeClients(api.kubeConfig());
    const { logger } = collectingLogger();
    controller = new PlacementController({
      kube,
      driverName: DRIVER,
      topologyKey: TOPOLOGY_KEY,
      events: new EventRecorder({ core: kube.core, component: "thinpool-csi-placement", logger }),
      logger,
      resyncPeriodMs: 60_000,
      retryDelayMs: 50,
    });
  });
  afterEach(() => api.stop());

  const reconcile = async (name: string) =>
    controller.reconcile(await kube.core.readNamespacedPersistentVolumeClaim({ name, namespace: "apps" }));
  const selectedNode = (name: string) =>
    api.get("PersistentVolumeClaim", name, "apps")?.metadata?.annotations?.[SELECTED];
  const eventsOf = (name: string) =>
    api.list("Event").filter((e) => (e["involvedObject"] as { name: string }).name === name) as Array<
      Record<string, unknown>
    >;
  const claimPatches = () => api.requestsTo("PATCH", /\/persistentvolumeclaims\//);

  it("WaitForFirstConsumer restore from a VolumeSnapshot: selected node set to the snapshot's node, Normal event", async () => {
    api.put(claim("restore", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }));
    assert.equal(await reconcile("restore"), "placed");
    assert.equal(selectedNode("restore"), "worker-2");
    const [patch] = claimPatches();
    assert.equal(patch?.contentType, "application/merge-patch+json");
    // The patch carries the resourceVersion read: a concurrent change makes it fail instead of being lost.
    assert.ok((patch?.body as { metadata: { resourceVersion?: string } }).metadata.resourceVersion);
    const [event] = eventsOf("restore");
    assert.equal(event?.["reason"], REASON_PLACED);
    assert.equal(event?.["type"], "Normal");
    assert.match(String(event?.["message"]), /VolumeSnapshot apps\/snap is on node worker-2/);
  });

  it("Immediate clone of a PVC: the node comes from the source PV's node affinity", async () => {
    api.put(claim("clone", "thin-immediate", { kind: "PersistentVolumeClaim", name: "src" }));
    assert.equal(await reconcile("clone"), "placed");
    assert.equal(selectedNode("clone"), "worker-1");
  });

  it("clone of a PV without node affinity: the node comes from the volume handle", async () => {
    api.put(sourcePv("pv-src", makeId("v-0123456789abcdef01234567", "worker-3"), undefined));
    api.put(claim("clone", "thin-wffc", { kind: "PersistentVolumeClaim", name: "src" }));
    assert.equal(await reconcile("clone"), "placed");
    assert.equal(selectedNode("clone"), "worker-3");
  });

  it("a node name too long for an id (hashed in the handle) is found among the cluster's Nodes", async () => {
    const longName = `node-${"x".repeat(120)}`;
    api.put({ apiVersion: "v1", kind: "Node", metadata: { name: longName } });
    const handle = makeId("s-89abcdef0123456789abcdef", longName);
    assert.ok(handle.includes("@#"), "the handle carries a hashed node tag");
    api.put(snapshotContent("snapcontent-1", handle));
    api.put(claim("restore", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }));
    assert.equal(await reconcile("restore"), "placed");
    assert.equal(selectedNode("restore"), longName);
  });

  it("leaves alone a selected node that already holds the source (no patch, no event)", async () => {
    api.put(claim("restore", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }, "worker-2"));
    assert.equal(await reconcile("restore"), "already-placed");
    assert.equal(claimPatches().length, 0);
    assert.equal(eventsOf("restore").length, 0);
  });

  it("WaitForFirstConsumer, scheduler picked another node (pod pinned there): replaced, Warning says the pod stays Pending", async () => {
    api.put(claim("restore", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }, "worker-3"));
    assert.equal(await reconcile("restore"), "replaced");
    assert.equal(selectedNode("restore"), "worker-2");
    const [event] = eventsOf("restore");
    assert.equal(event?.["type"], "Warning");
    assert.equal(event?.["reason"], REASON_OVERRIDDEN);
    assert.match(
      String(event?.["message"]),
      /scheduler had selected node worker-3 for a pod using this claim/,
    );
    assert.match(String(event?.["message"]), /cannot run on worker-2 .* stays Pending/);
  });

  it("Immediate claim taken by another node's provisioner: replaced, with the reason", async () => {
    api.put(claim("clone", "thin-immediate", { kind: "PersistentVolumeClaim", name: "src" }, "worker-2"));
    assert.equal(await reconcile("clone"), "replaced");
    assert.equal(selectedNode("clone"), "worker-1");
    assert.match(String(eventsOf("clone")[0]?.["message"]), /node worker-2 had claimed it/);
  });

  it("ignores claims of other drivers, claims without a data source, and bound claims", async () => {
    api.put(claim("foreign", "other", { kind: "VolumeSnapshot", name: "snap" }));
    api.put(claim("plain", "thin-wffc", undefined));
    const bound = claim("bound", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" });
    (bound["spec"] as Record<string, unknown>)["volumeName"] = "pv-bound";
    api.put(bound);
    for (const name of ["foreign", "plain", "bound"]) assert.equal(await reconcile(name), "ignored");
    assert.equal(claimPatches().length, 0);
    assert.equal(api.requestsTo("GET", /volumesnapshot/).length, 0, "no source lookup for claims it ignores");
  });

  it("waits for a snapshot not bound yet, and places the claim at the next sync once it is", async () => {
    api.put({
      apiVersion: "snapshot.storage.k8s.io/v1",
      kind: "VolumeSnapshot",
      metadata: { name: "late", namespace: "apps" },
      spec: { source: { persistentVolumeClaimName: "src" } },
    });
    api.put(claim("restore", "thin-wffc", { kind: "VolumeSnapshot", name: "late" }));
    assert.equal(await reconcile("restore"), "pending");
    assert.equal(selectedNode("restore"), undefined);
    assert.equal(eventsOf("restore").length, 0, "not ready yet is not worth a warning");

    api.put(snapshotContent("snapcontent-late", makeId("s-0000000000000000000000aa", "worker-3")));
    const snapshot = api.get("VolumeSnapshot", "late", "apps");
    api.put({ ...snapshot, status: { boundVolumeSnapshotContentName: "snapcontent-late" } });
    await controller.syncAll();
    assert.equal(selectedNode("restore"), "worker-3");
  });

  it("a snapshot of another driver, or a source node gone from the cluster: Warning event, claim unchanged", async () => {
    api.put(snapshotContent("snapcontent-1", "snap-handle", "other.csi.example.com"));
    api.put(claim("foreign-source", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }));
    assert.equal(await reconcile("foreign-source"), "unusable");
    assert.equal(eventsOf("foreign-source")[0]?.["reason"], REASON_SOURCE_UNUSABLE);

    api.remove("Node", "worker-1");
    api.put(claim("orphaned-source", "thin-wffc", { kind: "PersistentVolumeClaim", name: "src" }));
    assert.equal(await reconcile("orphaned-source"), "unusable");
    const [event] = eventsOf("orphaned-source");
    assert.equal(event?.["reason"], REASON_SOURCE_NODE_MISSING);
    assert.match(String(event?.["message"]), /node worker-1, which is not in the cluster/);
    assert.equal(claimPatches().length, 0);
  });

  it("a claim that changed between read and patch (409) is not overwritten: reported as a conflict", async () => {
    api.put(claim("restore", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }));
    const stale: V1PersistentVolumeClaim = await kube.core.readNamespacedPersistentVolumeClaim({
      name: "restore",
      namespace: "apps",
    });
    // The scheduler selects a node in the meantime.
    api.put(claim("restore", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }, "worker-2"));
    assert.equal(await controller.reconcile(stale), "conflict");
    assert.equal(selectedNode("restore"), "worker-2");
  });

  it("run: places claims present at start and claims created later (watch), then stops on abort", async () => {
    api.put(claim("early", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }));
    const stop = new AbortController();
    const running = controller.run(stop.signal);
    await waitFor(() => selectedNode("early") === "worker-2", "the claim present at start to be placed");
    api.put(claim("late", "thin-immediate", { kind: "PersistentVolumeClaim", name: "src" }));
    await waitFor(() => selectedNode("late") === "worker-1", "the claim created later to be placed");
    // A failed patch is retried.
    api.failNext({ method: "PATCH", path: /persistentvolumeclaims\/retried$/, status: 500 });
    api.put(claim("retried", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }));
    await waitFor(
      () => selectedNode("retried") === "worker-2",
      "the claim whose first patch failed to be placed",
    );
    stop.abort();
    await running;
  });
});
