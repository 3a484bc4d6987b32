/**
 * Leader election on a Lease (src/kube/leader-election.ts) against the fake API server: the rules with a
 * clock the test moves, then two placement controllers where only the leader acts and the other takes
 * over when the leader stops renewing.
 */
import assert from "node:assert/strict";

import { EventRecorder, makeKubeClients } from "../../../src/kube/index.js";
import { LeaderElector } from "../../../src/kube/leader-election.js";
import { PlacementController } from "../../../src/placement/controller.js";
import { FakeKubeApi } from "../../support/fake-kube-api.js";
import { DRIVER, SELECTED, TOPOLOGY_KEY, claim, collectingLogger, seedCluster, waitFor } from "./fixtures.js";

describe("leader election on a Lease (fake API server)", () => {
  let api: FakeKubeApi;
  beforeEach(async () => {
    api = new FakeKubeApi();
    await api.start();
  });
  afterEach(() => api.stop());

  describe("rules, with a clock the test moves", () => {
    let clock: number;
    const elector = (identity: string) =>
      new LeaderElector({
        coordination: makeKubeClients(api.kubeConfig()).coordination,
        namespace: "thinpool-csi",
        name: "placement",
        identity,
        leaseDurationSeconds: 15,
        renewDeadlineMs: 10_000,
        retryPeriodMs: 2_000,
        logger: collectingLogger().logger,
        now: () => clock,
      });
    const holder = () =>
      (api.get("Lease", "placement", "thinpool-csi")?.["spec"] as { holderIdentity?: string }).holderIdentity;

    beforeEach(() => {
      clock = Date.parse("2026-11-23T12:00:00Z");
    });

    it("the first candidate creates the Lease and leads; the second does not while it is renewed", async () => {
      const a = elector("a");
      const b = elector("b");
      assert.equal(await a.tryAcquireOrRenew(), true);
      assert.equal(holder(), "a");
      assert.equal(await b.tryAcquireOrRenew(), false);
      for (let i = 0; i < 10; i++) {
        clock += 5_000;
        assert.equal(await a.tryAcquireOrRenew(), true, "the leader renews");
        assert.equal(await b.tryAcquireOrRenew(), false, "the other waits: the record keeps changing");
      }
      assert.equal(holder(), "a");
    });

    it("another candidate takes a Lease whose record did not change for its duration (by its own clock)", async () => {
      const a = elector("a");
      const b = elector("b");
      await a.tryAcquireOrRenew();
      assert.equal(await b.tryAcquireOrRenew(), false);
      clock += 14_000;
      assert.equal(await b.tryAcquireOrRenew(), false, "not expired yet");
      clock += 2_000;
      assert.equal(await b.tryAcquireOrRenew(), true, "expired: taken over");
      const spec = api.get("Lease", "placement", "thinpool-csi")?.["spec"] as Record<string, unknown>;
      assert.equal(spec["holderIdentity"], "b");
      assert.equal(spec["leaseTransitions"], 1);
      assert.equal(
        await a.tryAcquireOrRenew(),
        false,
        "the old leader sees another holder and does not lead",
      );
    });

    it("two candidates racing for a free Lease: the resourceVersion lets exactly one win", async () => {
      const a = elector("a");
      await a.tryAcquireOrRenew();
      await a.release();
      const results = await Promise.all([elector("b").tryAcquireOrRenew(), elector("c").tryAcquireOrRenew()]);
      // Both read the released Lease; the second write carries a stale resourceVersion.
      assert.equal(results.filter((r) => r).length, 1);
    });

    it("release empties the holder so a successor does not wait for expiry", async () => {
      const a = elector("a");
      await a.tryAcquireOrRenew();
      await a.release();
      assert.equal(holder(), "");
      assert.equal(await elector("b").tryAcquireOrRenew(), true);
    });
  });

  it("two placement controllers: only the leader acts; when it stops renewing the other takes over", async function () {
    this.timeout(30_000);
    seedCluster(api);
    const replicas = ["a", "b"].map((identity) => {
      const kube = makeKubeClients(api.kubeConfig());
      const { logger, lines } = collectingLogger();
      const controller = new PlacementController({
        kube,
        driverName: DRIVER,
        topologyKey: TOPOLOGY_KEY,
        events: new EventRecorder({ core: kube.core, component: "placement", host: identity, logger }),
        logger,
        resyncPeriodMs: 60_000,
        retryDelayMs: 50,
      });
      const elector = new LeaderElector({
        coordination: kube.coordination,
        namespace: "thinpool-csi",
        name: "placement",
        identity,
        leaseDurationSeconds: 1,
        renewDeadlineMs: 600,
        retryPeriodMs: 100,
        logger,
      });
      const stop = new AbortController();
      let leading = 0;
      let running: Promise<void> = Promise.resolve();
      const election = elector.run(stop.signal, {
        onStartedLeading: (signal) => {
          leading += 1;
          running = controller.run(signal);
        },
        onStoppedLeading: () => undefined,
      });
      return { identity, lines, stop, election, leads: () => leading, running: () => running, elector };
    });
    const placedBy = (r: (typeof replicas)[number]) =>
      r.lines.filter((l) => l.includes("selected node set")).length;
    const selected = (name: string) =>
      api.get("PersistentVolumeClaim", name, "apps")?.metadata?.annotations?.[SELECTED];

    await waitFor(() => replicas.some((r) => r.leads() > 0), "a leader");
    const leader = replicas.find((r) => r.leads() > 0)!;
    const other = replicas.find((r) => r !== leader)!;
    api.put(claim("first", "thin-wffc", { kind: "VolumeSnapshot", name: "snap" }));
    // The controller logs after its patch has landed: wait for both, or the count races the log line.
    await waitFor(
      () => selected("first") === "worker-2" && placedBy(leader) === 1,
      "the leader to place the claim",
    );
    assert.equal(placedBy(leader), 1);
    assert.equal(placedBy(other), 0);
    assert.equal(other.leads(), 0, "the other replica never led");

    // The leader stops renewing (as a hung or partitioned pod would) without releasing the Lease: it must
    // stop acting at its renew deadline, and the other takes over once the Lease has expired.
    (leader.elector as unknown as { tryAcquireOrRenew: () => Promise<boolean> }).tryAcquireOrRenew =
      async () => false;
    await waitFor(() => other.leads() > 0, "the other replica to take over", 15_000);
    assert.ok(
      leader.lines.some((l) => l.includes("lost the leadership")),
      "the old leader stepped down",
    );
    api.put(claim("second", "thin-immediate", { kind: "PersistentVolumeClaim", name: "src" }));
    await waitFor(
      () => selected("second") === "worker-1" && placedBy(other) === 1,
      "the new leader to place the next claim",
    );
    assert.equal(placedBy(other), 1);
    assert.equal(placedBy(leader), 1, "the old leader stopped acting");

    for (const r of replicas) r.stop.abort();
    await Promise.all(replicas.map((r) => r.election));
    await Promise.all(replicas.map((r) => r.running()));
  });
});
