import assert from "node:assert/strict";
import { StateStore } from "../../../src/state/store.js";
import { DeviceState } from "../../../src/state/types.js";
import type { CommandRunner } from "../../../src/thinpool/command.js";
import {
  STATUS_REFRESH_AFTER_CHANGES,
  STATUS_REFRESH_AFTER_TTL_SHARE,
  ThinPoolEngine,
  type EngineOptions,
} from "../../../src/thinpool/engine.js";
import { METADATA_BLOCKS_PER_CHANGE } from "../../../src/thinpool/capacity.js";
import { EngineError } from "../../../src/thinpool/errors.js";
import { FakeKernel, openFakeEngine, recordingLogger, silentLogger } from "./fake-kernel.js";

const MiB = 1024 * 1024;

async function openEngine(
  kernel = new FakeKernel(),
  store = StateStore.open(":memory:"),
  extra: Partial<EngineOptions> = {},
) {
  const engine = await openFakeEngine(kernel, store, {
    dmsetup: { suspendDeadlineMs: 500, resumeDeadlineMs: 500, removeDeadlineMs: 200 },
    ...extra,
  });
  return { engine, kernel, store };
}

const messages = (kernel: FakeKernel) => kernel.calls.filter((c) => c[1] === "message").map((c) => c[4]);

async function rejectsWith(
  promise: Promise<unknown>,
  code: EngineError["code"],
  pattern?: RegExp,
): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof EngineError, `expected EngineError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

describe("ThinPoolEngine (fake kernel)", () => {
  it("creates a thin device: intent, create_thin, set_transaction_id, outcome", async () => {
    const { engine, kernel, store } = await openEngine();
    kernel.calls = [];
    const device = await engine.createVolume({ name: "v1", sizeBytes: 10 * MiB + 1, requestName: "pvc-1" });
    assert.equal(device.sizeBytes, 10 * MiB + 64 * 1024, "rounded up to the 64KiB pool block");
    assert.equal(device.state, DeviceState.Inactive);
    assert.equal(device.pending, null);
    assert.deepEqual(messages(kernel), ["create_thin 0", "set_transaction_id 0 1"]);
    assert.equal(kernel.transactionId, 1n);
    assert.equal(store.getPool("p")?.transactionId, 1);
    assert.ok(kernel.thinIds.has(0));
    assert.equal(engine.findByRequestName("volume", "pvc-1")?.name, "v1");
  });

  it("refuses a second device with the same name", async () => {
    const { engine } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await rejectsWith(engine.createVolume({ name: "v1", sizeBytes: MiB }), "AlreadyExists");
  });

  it("quarantines an id the pool already holds and takes the next", async () => {
    const kernel = new FakeKernel();
    const { engine, store } = await openEngine(kernel);
    kernel.thinIds.add(0); // a device the store does not know
    const device = await engine.createVolume({ name: "v1", sizeBytes: MiB });
    assert.equal(device.deviceId, 1);
    assert.deepEqual(
      store.listQuarantined("p").map((q) => q.deviceId),
      [0],
    );
    const next = await engine.createVolume({ name: "v2", sizeBytes: MiB });
    assert.equal(next.deviceId, 2, "a quarantined id is never reused silently");
  });

  it("leaves no row behind when the kernel refuses a create", async () => {
    const { engine, kernel, store } = await openEngine();
    kernel.fail(
      (a) => a.includes("create_thin 0"),
      "device-mapper: message ioctl on pool0  failed: No space left on device",
    );
    await rejectsWith(engine.createVolume({ name: "v1", sizeBytes: MiB }), "NoSpace", /create_thin 0/);
    assert.equal(store.getDevice("v1"), undefined);
    assert.equal(store.lowestFreeDeviceId("p"), 0);
  });

  it("refuses past the over-provisioning ratio with the numbers", async () => {
    const { engine } = await openEngine(new FakeKernel(), StateStore.open(":memory:"), {
      capacity: { overProvisioningRatio: 2, reservedDataPercent: 10, reservedMetadataPercent: 10 },
    });
    // pool: 16384 blocks x 64KiB = 1GiB; ratio 2 => 2GiB.
    await engine.createVolume({ name: "big", sizeBytes: 1536 * MiB });
    await rejectsWith(
      engine.createVolume({ name: "more", sizeBytes: 1024 * MiB }),
      "NoSpace",
      /over-provisioning limit.*1\.50GiB of 2GiB.*512MiB left/,
    );
  });

  it("refuses new devices once free data space is under the reserve", async () => {
    const kernel = new FakeKernel();
    const { engine } = await openEngine(kernel);
    kernel.dataUsedBlocks = 15000; // 91.5% used, reserve 10%
    await rejectsWith(
      engine.createVolume({ name: "v", sizeBytes: MiB }),
      "NoSpace",
      /free data space .* reserve/,
    );
    const usage = await engine.poolUsage("p");
    assert.equal(usage.availableBytes, 0);
  });

  it("activates idempotently and cancels a pending deferred removal", async () => {
    const { engine, kernel } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    const path = await engine.activate("v1");
    assert.equal(path, "/dev/mapper/tpcsi-v1");
    assert.equal(kernel.devices.get("tpcsi-v1")?.table, `0 2048 thin ${kernel.poolDevno} 0`);
    const dev = kernel.devices.get("tpcsi-v1");
    assert.ok(dev);
    dev.deferredRemove = true;
    assert.equal(await engine.activate("v1"), path);
    assert.equal(dev.deferredRemove, false);
    assert.equal(engine.getDevice("v1")?.state, DeviceState.Active);
  });

  it("snapshots an active origin: suspend, create_snap, resume, snapshot kept inactive", async () => {
    const { engine, kernel } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    kernel.calls = [];
    const snap = await engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
    const verbs = kernel.calls
      .filter((c) => ["suspend", "resume", "message"].includes(c[1] ?? ""))
      .map((c) => c.slice(1).join(" "));
    assert.deepEqual(verbs, [
      "suspend tpcsi-v1",
      "message pool0 0 create_snap 1 0",
      "resume tpcsi-v1",
      "message pool0 0 set_transaction_id 1 2",
    ]);
    assert.equal(snap.state, DeviceState.Inactive);
    assert.equal(snap.parent, "v1");
    assert.equal(kernel.devices.has("tpcsi-s1"), false);
    assert.equal(kernel.devices.get("tpcsi-v1")?.suspended, false);
  });

  it("does not suspend an inactive origin", async () => {
    const { engine, kernel } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    kernel.calls = [];
    await engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
    assert.equal(
      kernel.calls.some((c) => c[1] === "suspend"),
      false,
    );
  });

  it("retries a suspend answered with EBUSY", async () => {
    const { engine, kernel } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    kernel.fail(
      (a) => a[1] === "suspend",
      "device-mapper: suspend ioctl on tpcsi-v1  failed: Device or resource busy",
      2,
    );
    await engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
    assert.equal(kernel.calls.filter((c) => c[1] === "suspend").length, 3);
  });

  it("always resumes the origin when create_snap fails, and leaves no half-record", async () => {
    const { engine, kernel, store } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    kernel.fail(
      (a) => a.some((x) => x.startsWith("create_snap")),
      "device-mapper: message ioctl on pool0  failed: No space left on device",
    );
    await rejectsWith(engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" }), "NoSpace");
    assert.equal(kernel.devices.get("tpcsi-v1")?.suspended, false);
    assert.equal(store.getDevice("s1"), undefined);
    assert.deepEqual([...kernel.thinIds], [0]);
  });

  it("retries a failing resume until it succeeds", async () => {
    const { engine, kernel } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    kernel.fail(
      (a) => a[1] === "resume",
      "device-mapper: resume ioctl on tpcsi-v1  failed: Invalid argument",
      3,
    );
    await engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
    assert.equal(kernel.devices.get("tpcsi-v1")?.suspended, false);
    assert.equal(engine.getDevice("v1")?.state, DeviceState.Active);
  });

  it("reports loudly and marks the origin faulty when resume never succeeds; the snapshot is still whole", async () => {
    const logger = recordingLogger();
    const { engine, kernel } = await openEngine(new FakeKernel(), StateStore.open(":memory:"), { logger });
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    kernel.fail(
      (a) => a[1] === "resume",
      "device-mapper: resume ioctl on tpcsi-v1  failed: Invalid argument",
      1000,
    );
    const snap = await engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
    assert.equal(snap.state, DeviceState.Inactive);
    assert.ok(kernel.thinIds.has(snap.deviceId));
    const origin = engine.getDevice("v1");
    assert.equal(origin?.state, DeviceState.Faulty);
    assert.match(origin?.lastError ?? "", /could not be resumed/);
    assert.ok(logger.lines.some((l) => l.level === "error" && /could not be resumed/.test(l.message)));
    assert.ok(logger.lines.some((l) => l.level === "warn" && /RESUME OF tpcsi-v1 FAILED/.test(l.message)));
  });

  it("restores into a larger volume and refuses a smaller one", async () => {
    const { engine } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: 2 * MiB });
    await engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
    const restored = await engine.createSnapshot({
      name: "r1",
      source: "s1",
      kind: "volume",
      sizeBytes: 4 * MiB,
    });
    assert.equal(restored.sizeBytes, 4 * MiB);
    assert.equal(restored.kind, "volume");
    await rejectsWith(
      engine.createSnapshot({ name: "r2", source: "s1", kind: "volume", sizeBytes: MiB }),
      "OutOfRange",
    );
    await rejectsWith(engine.createSnapshot({ name: "r3", source: "nope", kind: "volume" }), "NotFound");
  });

  it("deactivates, deferring removal while the device is open", async () => {
    const { engine, kernel } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    const dev = kernel.devices.get("tpcsi-v1");
    assert.ok(dev);
    dev.openCount = 1;
    assert.equal(await engine.deactivate("v1"), "deferred");
    assert.equal(dev.deferredRemove, true);
    dev.openCount = 0;
    kernel.devices.delete("tpcsi-v1");
    assert.equal(await engine.deactivate("v1"), "removed");
    assert.equal(engine.getDevice("v1")?.state, DeviceState.Inactive);
  });

  it("deletes idempotently, refuses while open, and discards first when asked", async () => {
    const { engine, kernel, store } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    const dev = kernel.devices.get("tpcsi-v1");
    assert.ok(dev);
    dev.openCount = 1;
    await rejectsWith(engine.deleteDevice("v1"), "Busy", /open count 1/);
    assert.equal(store.getDevice("v1")?.state, DeviceState.Active, "a refused delete changes nothing");
    dev.openCount = 0;
    await engine.deleteDevice("v1");
    assert.equal(store.getDevice("v1"), undefined);
    assert.equal(kernel.thinIds.size, 0);
    await engine.deleteDevice("v1");

    await engine.createVolume({ name: "v3", sizeBytes: MiB });
    kernel.calls = [];
    await engine.deleteDevice("v3");
    assert.equal(store.getDevice("v3"), undefined);
    assert.deepEqual(
      kernel.calls.filter((c) => c.includes("tpcsi-v3")).map((c) => c[1]),
      ["info"],
      "an inactive device is deleted without a remove process",
    );

    await engine.createVolume({ name: "v2", sizeBytes: MiB });
    kernel.calls = [];
    await engine.deleteDevice("v2", { discard: true });
    assert.ok(kernel.calls.some((c) => c[0] === "blkdiscard" && c[1] === "/dev/mapper/tpcsi-v2"));
    assert.equal(kernel.devices.has("tpcsi-v2"), false, "the temporary activation for discard is removed");
  });

  it("keeps snapshots when their origin is deleted", async () => {
    const { engine, kernel } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    const snap = await engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
    await engine.deleteDevice("v1");
    assert.ok(kernel.thinIds.has(snap.deviceId));
    const restored = await engine.createSnapshot({ name: "r1", source: "s1", kind: "volume" });
    assert.equal(restored.parent, "s1");
  });

  it("grows an active device by reloading its table, and never shrinks", async () => {
    const { engine, kernel } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    const grown = await engine.resize("v1", 3 * MiB);
    assert.equal(grown.sizeBytes, 3 * MiB);
    assert.equal(grown.state, DeviceState.Active);
    assert.equal(kernel.devices.get("tpcsi-v1")?.table, `0 6144 thin ${kernel.poolDevno} 0`);
    await rejectsWith(engine.resize("v1", MiB), "OutOfRange");
  });

  describe("deviceCondition (CSI VolumeCondition)", () => {
    const conditionOf = async (
      setup: (ctx: { engine: ThinPoolEngine; kernel: FakeKernel; store: StateStore }) => Promise<void> | void,
      options: { shouldBeActive?: boolean } = {},
    ) => {
      const ctx = await openEngine();
      await ctx.engine.createVolume({ name: "v1", sizeBytes: MiB });
      await ctx.engine.activate("v1");
      await setup(ctx);
      return ctx.engine.deviceCondition("v1", options);
    };

    it("is healthy for an active device in a writable pool, and for an inactive snapshot", async () => {
      assert.deepEqual(await conditionOf(() => undefined), { abnormal: false, message: "healthy" });
      assert.deepEqual(
        await conditionOf(async ({ engine }) => {
          await engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
          await engine.deactivate("v1");
        }),
        { abnormal: false, message: "healthy" },
      );
    });

    const abnormal: Array<
      [string, Parameters<typeof conditionOf>[0], RegExp, { shouldBeActive?: boolean }?]
    > = [
      [
        "faulty in the store, with the recorded reason",
        ({ store }) =>
          void store.updateDevice("v1", { state: DeviceState.Faulty, lastError: "id 0 missing" }),
        /faulty: id 0 missing/,
      ],
      [
        "missing: active in the store but no dm device",
        ({ kernel }) => void kernel.devices.delete("tpcsi-v1"),
        /should be active but has no device-mapper device/,
      ],
      [
        "inactive although staged or published",
        async ({ engine }) => void (await engine.deactivate("v1")),
        /inactive but should be active/,
        { shouldBeActive: true },
      ],
      [
        "suspended",
        ({ kernel }) => void ((kernel.devices.get("tpcsi-v1") as { suspended: boolean }).suspended = true),
        /suspended: I\/O is frozen/,
      ],
      [
        "failed in the kernel (thin status Fail)",
        ({ kernel }) => void ((kernel.devices.get("tpcsi-v1") as { failed: boolean }).failed = true),
        /failed in the kernel/,
      ],
      ["in a read-only pool", ({ kernel }) => void (kernel.poolMode = "ro"), /pool p is read-only/],
      [
        "in a pool out of data space",
        ({ kernel }) => void (kernel.poolMode = "out_of_data_space"),
        /pool p is out of data space/,
      ],
      [
        "in a pool whose data space is full (still rw, queueing)",
        ({ kernel }) => void (kernel.dataUsedBlocks = kernel.dataTotalBlocks),
        /pool p is out of data space/,
      ],
      ["in a failed pool", ({ kernel }) => void (kernel.poolMode = "Fail"), /pool p has failed/],
      [
        "in a pool that cannot be read",
        ({ kernel }) => kernel.fail((a) => a[1] === "status" && a[2] === "pool0", "Device pool0 not found"),
        /pool p cannot be read/,
      ],
    ];
    for (const [what, setup, message, options] of abnormal) {
      it(`is abnormal for a device ${what}`, async () => {
        const condition = await conditionOf(setup, options);
        assert.equal(condition.abnormal, true, condition.message);
        assert.match(condition.message, message);
      });
    }

    it("is abnormal for a device the store does not know", async () => {
      const { engine } = await openEngine();
      assert.match((await engine.deviceCondition("ghost")).message, /not in the state store/);
    });
  });

  it("reports the bytes mapped by each active device", async () => {
    const { engine, kernel } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.createVolume({ name: "v2", sizeBytes: MiB });
    await engine.activate("v1");
    (kernel.devices.get("tpcsi-v1") as { mappedSectors: number }).mappedSectors = 128;
    kernel.addDevice("other-thin", `0 2048 thin ${kernel.poolDevno} 9`, "");
    assert.deepEqual([...(await engine.mappedBytes())], [["v1", 128 * 512]]);
    // Inactive devices need the pool's metadata device, which the fake pool's table (254:1) does not name
    // on this host: they are left out rather than guessed (the VM operations suite reads them for real).
    assert.deepEqual([...(await engine.mappedBytes({ includeInactive: true }))], [["v1", 128 * 512]]);
  });

  it("tells the observer how long an active origin was suspended for a snapshot", async () => {
    const suspends: Array<{ device: string; pool: string; frozenMs: number }> = [];
    const { engine } = await openEngine(undefined, undefined, {
      observer: { onSuspend: (e) => suspends.push(e) },
    });
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.createSnapshot({ name: "s0", source: "v1", kind: "snapshot" });
    assert.equal(suspends.length, 0, "an inactive origin is not suspended");
    await engine.activate("v1");
    await engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
    assert.equal(suspends.length, 1);
    assert.equal(suspends[0]?.device, "v1");
    assert.equal(suspends[0]?.pool, "p");
    assert.ok((suspends[0]?.frozenMs ?? -1) >= 0);
  });

  it("answers the conditions of a page with one dmsetup info and one thin status naming its active devices", async () => {
    const { engine, kernel } = await openEngine();
    const names = ["v1", "v2", "v3", "v4"];
    for (const name of names) await engine.createVolume({ name, sizeBytes: MiB });
    for (const name of names.slice(0, 3)) await engine.activate(name);
    kernel.addDevice("tpcsi-other", "0 2048 thin 254:2 99", "");
    kernel.calls = [];
    const conditions = await engine.deviceConditions(engine.listDevices());
    assert.deepEqual(
      conditions.map(([d, c]) => [d.name, c.abnormal]),
      names.map((name) => [name, false]),
    );
    const active = ["tpcsi-v1", "tpcsi-v2", "tpcsi-v3"];
    assert.deepEqual(
      kernel.calls.map((c) => c.slice(1)),
      [
        ["status", "pool0"],
        ["info", ...active],
        ["status", ...active],
      ],
    );

    // One active device: dmsetup prints its status line without the name.
    kernel.devices.get("tpcsi-v2")!.failed = true;
    const [[, condition]] = (await engine.deviceConditions(
      engine.listDevices().filter((d) => d.name === "v2"),
    )) as [[unknown, { abnormal: boolean; message: string }]];
    assert.equal(condition.abnormal, true);
    assert.match(condition.message, /failed in the kernel/);
  });

  it("reads every device when an active device of the page is missing (dmsetup stops at the first)", async () => {
    const { engine, kernel } = await openEngine();
    const names = ["v1", "v2", "v3"];
    for (const name of names) await engine.createVolume({ name, sizeBytes: MiB });
    for (const name of names) await engine.activate(name);
    kernel.devices.delete("tpcsi-v2");
    kernel.calls = [];
    const conditions = await engine.deviceConditions(engine.listDevices());
    assert.deepEqual(
      conditions.map(([d, c]) => [d.name, c.abnormal]),
      [
        ["v1", false],
        ["v2", true],
        ["v3", false],
      ],
    );
    assert.deepEqual(
      kernel.calls.map((c) => c.slice(1, 2)),
      [["status"], ["info"], ["info"], ["status"], ["status"]],
      "the named calls fail and each falls back to one listing of the host",
    );
  });
});

describe("existing pools by name (fake kernel)", () => {
  const openOn = (kernel: FakeKernel, device: string) =>
    ThinPoolEngine.open({
      store: StateStore.open(":memory:"),
      runner: kernel,
      sectorsOf: kernel.sectorsOf,
      allSectors: kernel.allSectors,
      logger: silentLogger,
      pools: [{ name: "p", source: { type: "existing", device } }],
    });

  it("finds an LVM pool under either spelling and leaves LVM's transaction id alone", async () => {
    // LVM with no thin volumes of its own: vg-pool is the thin-pool target.
    const kernel = new FakeKernel("vg-pool");
    kernel.devices.get("vg-pool")!.uuid = "LVM-abc-tpool";
    for (const spelling of ["vg-pool", "vg-pool-tpool", "/dev/mapper/vg-pool-tpool"]) {
      const engine = await openOn(kernel, spelling);
      await engine.createVolume({ name: `v-${spelling.length}`, sizeBytes: MiB });
      assert.equal(kernel.transactionId, 0n, "no set_transaction_id on an LVM pool");
    }
  });

  it("skips LVM's linear public device and uses the -tpool thin-pool behind it", async () => {
    const kernel = new FakeKernel("vg-pool-tpool");
    kernel.addDevice("vg-pool", "0 2048 linear 254:3 0", "LVM-abc");
    const engine = await openOn(kernel, "vg-pool");
    kernel.calls = [];
    await engine.createVolume({ name: "v", sizeBytes: MiB });
    const targets = kernel.calls.filter((c) => c[1] === "message").map((c) => c[2]);
    assert.ok(targets.length > 0 && targets.every((t) => t === "vg-pool-tpool"), targets.join(","));
  });

  it("names both spellings when neither exists", async () => {
    await assert.rejects(
      openOn(new FakeKernel("other"), "vg-pool"),
      /no thin-pool device 'vg-pool' or 'vg-pool-tpool' exists/,
    );
  });
});

describe("readiness (fake kernel)", () => {
  it("is ready after reconciliation and not ready while the pool has failed or needs a check", async () => {
    const { engine, kernel } = await openEngine();
    assert.deepEqual(await engine.readiness(), { ready: true });
    kernel.poolMode = "Fail";
    const failed = await engine.readiness();
    assert.equal(failed.ready, false);
    assert.match(failed.reason ?? "", /pool p has failed or needs a metadata check/);
    kernel.poolMode = "rw";
    assert.deepEqual(await engine.readiness(), { ready: true });
    kernel.devices.delete("pool0");
    const gone = await engine.readiness();
    assert.equal(gone.ready, false);
    assert.match(gone.reason ?? "", /pool p cannot be read/);
  });
});

describe("start-up reconciliation (fake kernel)", () => {
  it("rolls an unfinished create forward when the pool's transaction id shows it completed", async () => {
    const { engine, kernel, store } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    // Crash after set_transaction_id, before the outcome commit:
    store.updateDevice("v1", { state: DeviceState.Creating, pending: { op: "create", txid: 1 } });
    store.setPoolTransactionId("p", 0);
    const reopened = await openEngine(kernel, store);
    assert.equal(reopened.engine.getDevice("v1")?.state, DeviceState.Inactive);
    assert.equal(reopened.engine.lastReconcile?.rolledForward, 1);
    assert.equal(store.getPool("p")?.transactionId, 1);
  });

  it("rolls an unfinished create back when the transaction id did not move", async () => {
    const kernel = new FakeKernel();
    const store = StateStore.open(":memory:");
    await openEngine(kernel, store);
    // Crash after create_thin, before set_transaction_id:
    store.insertDevice({
      name: "v1",
      pool: "p",
      deviceId: 0,
      kind: "volume",
      sizeBytes: MiB,
      parent: null,
      state: DeviceState.Creating,
      pending: { op: "create", txid: 1 },
      requestName: "pvc",
      attributes: {},
    });
    kernel.thinIds.add(0);
    const { engine } = await openEngine(kernel, store);
    assert.equal(engine.getDevice("v1"), undefined);
    assert.equal(kernel.thinIds.size, 0, "the half-created thin id is deleted");
    assert.equal(engine.lastReconcile?.rolledBack, 1);
    assert.equal(store.lowestFreeDeviceId("p"), 0, "no id leaked");
  });

  it("rolls an unfinished delete forward", async () => {
    const { engine, kernel, store } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    store.updateDevice("v1", {
      state: DeviceState.Deleting,
      pending: { op: "delete", txid: 2, discard: false },
    });
    const reopened = await openEngine(kernel, store);
    assert.equal(reopened.engine.getDevice("v1"), undefined);
    assert.equal(kernel.thinIds.size, 0);
  });

  it("reactivates active devices after a reboot and keeps snapshots inactive", async () => {
    const { engine, kernel, store } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.createVolume({ name: "v2", sizeBytes: MiB });
    await engine.activate("v1");
    await engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
    kernel.devices.delete("tpcsi-v1"); // reboot: no dm devices survive
    const reopened = await openEngine(kernel, store);
    assert.ok(kernel.devices.has("tpcsi-v1"));
    assert.equal(kernel.devices.has("tpcsi-v2"), false);
    assert.equal(kernel.devices.has("tpcsi-s1"), false);
    assert.equal(reopened.engine.lastReconcile?.reactivated, 1);
    assert.equal((await reopened.engine.readiness()).ready, true);
  });

  it("reports where the start-up time went, phase by phase", async () => {
    const { engine, kernel, store } = await openEngine();
    for (const name of ["v1", "v2"]) {
      await engine.createVolume({ name, sizeBytes: MiB });
      await engine.activate(name);
      kernel.devices.delete(`tpcsi-${name}`); // reboot: no dm devices survive
    }
    const slowCreates: CommandRunner = {
      run: async (file, args, options) => {
        if (args[0] === "create") await new Promise((resolve) => setTimeout(resolve, 80));
        return kernel.run(file, args, options);
      },
    };
    const { engine: reopened } = await openEngine(kernel, store, { runner: slowCreates });
    const report = reopened.lastReconcile;
    assert.ok(report);
    assert.equal(report.reactivated, 2);
    const { listing, settling, reactivation, metadataCheck } = report.phasesMs;
    assert.ok(reactivation >= 75, `the slow creates are counted as reactivation: ${reactivation} ms`);
    for (const ms of [listing, settling, metadataCheck]) assert.ok(Number.isInteger(ms) && ms >= 0);
    assert.ok(listing + settling + reactivation + metadataCheck <= report.durationMs);
  });

  it("reads every device's info in one dmsetup call at start-up and live sizes in one read, however many are active", async () => {
    const { engine, kernel, store } = await openEngine();
    for (const name of ["v1", "v2", "v3"]) {
      await engine.createVolume({ name, sizeBytes: MiB });
      await engine.activate(name);
    }
    kernel.calls = [];
    kernel.sizeReads = [];
    const reopened = await openEngine(kernel, store);
    const perDevice = kernel.calls.filter((argv) => argv.some((arg) => arg.startsWith("tpcsi-")));
    assert.deepEqual(perDevice, [], "no dmsetup call names a device");
    const infos = kernel.calls.filter((argv) => argv[1] === "info" && argv[2] !== "pool0");
    assert.deepEqual(
      infos.map((argv) => argv[2]),
      ["-c"],
      "one listing in columns, nothing open to read again",
    );
    const listings = kernel.calls.filter((argv) => argv.includes("-v") || argv.join(" ") === "dmsetup table");
    assert.deepEqual(listings, [], "no table of every device is read");
    assert.deepEqual(kernel.sizeReads, [], "no size read one device at a time");
    assert.equal(reopened.engine.lastReconcile?.checked, 3);
  });

  it("at start-up, reads the open devices again for a pending deferred removal and cancels it on an active one", async () => {
    const { engine, kernel, store } = await openEngine();
    for (const name of ["v1", "v2", "v3"]) {
      await engine.createVolume({ name, sizeBytes: MiB });
      await engine.activate(name);
    }
    const [v1, v2] = [kernel.devices.get("tpcsi-v1"), kernel.devices.get("tpcsi-v2")];
    assert.ok(v1 && v2);
    v1.openCount = 1; // mounted
    v2.openCount = 1;
    v2.deferredRemove = true; // removed by hand with --deferred while mounted
    kernel.calls = [];
    await openEngine(kernel, store);
    const longForm = kernel.calls.filter(
      (argv) => argv[1] === "info" && argv.some((arg) => arg.startsWith("tpcsi-")),
    );
    assert.deepEqual(longForm, [["dmsetup", "info", "tpcsi-v1", "tpcsi-v2"]], "only the open devices");
    assert.equal(v2.deferredRemove, false, "the active device's pending removal was cancelled");
    assert.ok(kernel.devices.has("tpcsi-v3"));
  });

  it("reads from sysfs the size of an active device that the list of all sizes lacks, and reloads it if short", async () => {
    const { engine, kernel, store } = await openEngine();
    for (const name of ["v1", "v2"]) {
      await engine.createVolume({ name, sizeBytes: 2 * MiB });
      await engine.activate(name);
    }
    const v2 = kernel.devices.get("tpcsi-v2");
    assert.ok(v2);
    v2.table = `0 2048 thin ${kernel.poolDevno} 1`; // 1 MiB live, 2 MiB recorded
    const v2devno = `254:${v2.minor}`;
    kernel.sizeReads = [];
    await openEngine(kernel, store, {
      allSectors: async () => {
        const all = await kernel.allSectors();
        all.delete(v2devno);
        return all;
      },
    });
    assert.deepEqual(kernel.sizeReads, [v2devno]);
    assert.equal(v2.table, `0 4096 thin ${kernel.poolDevno} 1`);
  });

  it("resumes a device left suspended by a crash mid-snapshot", async () => {
    const { engine, kernel, store } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    const dev = kernel.devices.get("tpcsi-v1");
    assert.ok(dev);
    dev.suspended = true;
    const reopened = await openEngine(kernel, store);
    assert.equal(dev.suspended, false);
    assert.equal(reopened.engine.lastReconcile?.resumed, 1);
  });

  it("finishes an unfinished grow of an active device", async () => {
    const { engine, kernel, store } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    store.updateDevice("v1", {
      state: DeviceState.Resizing,
      pending: { op: "resize", sizeBytes: 2 * MiB, fromState: DeviceState.Active },
    });
    await openEngine(kernel, store);
    assert.equal(kernel.devices.get("tpcsi-v1")?.table, `0 4096 thin ${kernel.poolDevno} 0`);
    assert.equal(store.getDevice("v1")?.sizeBytes, 2 * MiB);
    assert.equal(store.getDevice("v1")?.state, DeviceState.Active);
  });

  it("loads the recorded size into an active device whose live size is shorter, and leaves the others", async () => {
    const { engine, kernel, store } = await openEngine();
    for (const name of ["v1", "v2"]) {
      await engine.createVolume({ name, sizeBytes: 2 * MiB });
      await engine.activate(name);
    }
    const v1 = kernel.devices.get("tpcsi-v1");
    assert.ok(v1);
    v1.table = `0 2048 thin ${kernel.poolDevno} 0`; // 1 MiB live, 2 MiB recorded
    kernel.calls = [];
    await openEngine(kernel, store);
    assert.equal(v1.table, `0 4096 thin ${kernel.poolDevno} 0`);
    const reloaded = kernel.calls.filter((argv) => argv[1] === "reload").map((argv) => argv[2]);
    assert.deepEqual(reloaded, ["tpcsi-v1"]);
  });

  it("reads the live table of a device whose size sysfs cannot give, instead of marking it faulty", async () => {
    const { engine, kernel, store } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: 2 * MiB });
    await engine.activate("v1");
    const v1 = kernel.devices.get("tpcsi-v1");
    assert.ok(v1);
    v1.table = `0 2048 thin ${kernel.poolDevno} 0`; // 1 MiB live, 2 MiB recorded
    const reopened = await openEngine(kernel, store, {
      sectorsOf: () => Promise.reject(new Error("ENOENT: no sysfs")),
      allSectors: () => Promise.reject(new Error("ENOENT: no /proc/partitions")),
    });
    assert.equal(reopened.engine.getDevice("v1")?.state, DeviceState.Active);
    assert.equal(v1.table, `0 4096 thin ${kernel.poolDevno} 0`);
  });

  it("reactivates after a reboot in one dmsetup process per 128 devices, recorded in one transaction each", async () => {
    const { engine, kernel, store } = await openEngine();
    const names = Array.from({ length: 300 }, (_, i) => `v${String(i).padStart(3, "0")}`);
    for (const name of names) {
      await engine.createVolume({ name, sizeBytes: MiB });
      await engine.activate(name);
    }
    for (const name of names) kernel.devices.delete(`tpcsi-${name}`); // reboot: no dm devices survive
    kernel.calls = [];
    const reopened = await openEngine(kernel, store);
    const creates = kernel.calls.filter((c) => c[1] === "create");
    assert.deepEqual(
      creates.map((c) => c[2]),
      ["--concise", "--concise", "--concise"],
      "300 devices: batches of 128, 128 and 44",
    );
    assert.equal(reopened.engine.lastReconcile?.reactivated, 300);
    for (const name of names) {
      assert.equal(kernel.devices.get(`tpcsi-${name}`)?.uuid, `THINPOOL-CSI-${name}`);
      assert.equal(reopened.engine.getDevice(name)?.state, DeviceState.Active);
    }
  });

  it("when a batch stops at a device it cannot create, the rest come up one by one and only that one is faulty", async () => {
    const { engine, kernel, store } = await openEngine();
    const names = ["a1", "a2", "a3", "a4"];
    for (const name of names) {
      await engine.createVolume({ name, sizeBytes: MiB });
      await engine.activate(name);
      kernel.devices.delete(`tpcsi-${name}`); // reboot: no dm devices survive
    }
    kernel.thinIds.delete(engine.getDevice("a2")?.deviceId as number); // the pool lost this one's id
    kernel.calls = [];
    const reopened = await openEngine(kernel, store);
    const creates = kernel.calls.filter((c) => c[1] === "create").map((c) => c[2]);
    assert.deepEqual(creates, ["--concise", "tpcsi-a2", "tpcsi-a3", "tpcsi-a4"], "a1 came up in the batch");
    assert.equal(reopened.engine.getDevice("a2")?.state, DeviceState.Faulty);
    assert.match(
      reopened.engine.getDevice("a2")?.lastError ?? "",
      /could not be reactivated.*No data available/,
    );
    for (const name of ["a1", "a3", "a4"]) {
      assert.ok(kernel.devices.has(`tpcsi-${name}`), name);
      assert.equal(reopened.engine.getDevice(name)?.state, DeviceState.Active, name);
    }
    assert.equal(reopened.engine.lastReconcile?.reactivated, 3);
  });

  it("marks a device faulty (never deletes it) when it cannot be reactivated", async () => {
    const { engine, kernel, store } = await openEngine();
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    kernel.devices.delete("tpcsi-v1");
    kernel.thinIds.delete(0); // the pool lost the id
    const reopened = await openEngine(kernel, store);
    const device = reopened.engine.getDevice("v1");
    assert.equal(device?.state, DeviceState.Faulty);
    assert.match(device?.lastError ?? "", /could not be reactivated/);
    assert.equal(reopened.engine.lastReconcile?.faulty, 1);
  });
});

describe("ThinPoolEngine capacity checks with a cached pool status (fake kernel)", () => {
  const cached = { statusTtlMs: 60_000 };
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  /** The engine's own changes after which a status is read again (in the background). */
  const N = STATUS_REFRESH_AFTER_CHANGES;
  /** After v1 (which read the status), creates the volumes that leave the next create to start a read. */
  const createUntilNextRead = async (engine: ThinPoolEngine) => {
    for (let i = 1; i < N - 1; i++) await engine.createVolume({ name: `f${i}`, sizeBytes: MiB });
    await settle();
  };

  // A large metadata device, and one so small that the charge for unseen creates decides the answer.
  for (const [total, used] of [
    [4096, 100],
    [320, 250],
  ] as const) {
    it(`charges each create it has not seen in a status, and refuses exactly where a fresh read would (${total} metadata blocks)`, async () => {
      const kernel = new FakeKernel();
      kernel.metadataTotalBlocks = total;
      kernel.metadataUsedBlocks = used;
      kernel.metadataBlocksPerCreate = METADATA_BLOCKS_PER_CHANGE; // the worst one change may take
      const reserve = total / 10;
      const freeAtCreate: number[] = [];
      const run = kernel.run.bind(kernel);
      kernel.run = (file, args, options) => {
        if (args[3]?.startsWith("create_thin"))
          freeAtCreate.push(kernel.metadataTotalBlocks - kernel.metadataUsedBlocks);
        return run(file, args, options);
      };
      const { engine } = await openEngine(kernel, undefined, cached);
      let refused: unknown;
      for (let i = 0; !refused; i++) {
        refused = await engine.createVolume({ name: `v${i}`, sizeBytes: MiB }).then(
          () => undefined,
          (err: unknown) => err,
        );
      }
      assert.ok(refused instanceof EngineError && refused.code === "NoSpace", String(refused));
      assert.match(refused.message, /free metadata space .* reserve/);
      assert.ok(freeAtCreate.length >= 2);
      assert.ok(
        freeAtCreate.every((free) => free > reserve),
        `every create admitted had free metadata above the reserve: ${freeAtCreate.join(", ")}`,
      );
      const freeAtRefusal = kernel.metadataTotalBlocks - kernel.metadataUsedBlocks;
      assert.ok(freeAtRefusal <= reserve, `refused with ${freeAtRefusal} blocks free`);
      if (total === 4096) {
        const reads = kernel.calls.filter((c) => c[1] === "status").length;
        assert.ok(reads < freeAtCreate.length / 2, `${reads} status reads: stale statuses were used`);
      }
    });
  }

  it("does not wait for the status read the previous create started, far from the reserves", async () => {
    const { engine, kernel } = await openEngine(new FakeKernel(), undefined, cached);
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await createUntilNextRead(engine);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const run = kernel.run.bind(kernel);
    kernel.run = async (file, args, options) => {
      if (args[0] === "status") await gate; // every read from now on hangs until released
      return run(file, args, options);
    };
    await engine.createVolume({ name: "v2", sizeBytes: MiB });
    await settle(); // v2's read has started and hangs
    const v3 = engine.createVolume({ name: "v3", sizeBytes: MiB }).then(() => "created");
    const waited = new Promise((r) => setTimeout(() => r("waited for the read"), 500));
    assert.equal(await Promise.race([v3, waited]), "created");
    release();
  });

  it("lets the status read it started finish before it freezes an origin for a snapshot", async () => {
    const { engine, kernel } = await openEngine(new FakeKernel(), undefined, cached);
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    await engine.activate("v1");
    await createUntilNextRead(engine);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const order: string[] = [];
    const run = kernel.run.bind(kernel);
    kernel.run = async (file, args, options) => {
      if (args[0] === "status") {
        await gate;
        order.push("status read");
      }
      if (args[0] === "suspend") order.push("suspend");
      return run(file, args, options);
    };
    await engine.createVolume({ name: "v2", sizeBytes: MiB });
    await settle(); // v2's read has started and hangs
    const snapshot = engine.createSnapshot({ name: "s1", source: "v1", kind: "snapshot" });
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(order, [], "not frozen while the read runs");
    release();
    await snapshot;
    assert.deepEqual(order.slice(0, 2), ["status read", "suspend"]);
  });

  it("near a reserve reads the kernel on every check, however recent the cached status", async () => {
    const kernel = new FakeKernel();
    kernel.dataUsedBlocks = 13500; // of 16384: 2884 free, under twice the 1638-block reserve
    const { engine } = await openEngine(kernel, undefined, cached);
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    kernel.dataUsedBlocks = 15000; // a workload wrote 190 MiB since
    await rejectsWith(
      engine.createVolume({ name: "v2", sizeBytes: MiB }),
      "NoSpace",
      /free data space .* reserve/,
    );
  });

  it(`far from the reserves, checks spawn no read: the status is read after every ${N}th change`, async () => {
    const { engine, kernel } = await openEngine(new FakeKernel(), undefined, cached);
    kernel.calls = [];
    for (let i = 0; i < 2 * N; i++) {
      await engine.createVolume({ name: `v${i}`, sizeBytes: MiB });
      await settle(); // a read the create started has answered
    }
    const create = ["create_thin", "set_transaction_id"];
    const createsThenRead = [...Array.from({ length: N }, () => create).flat(), "status"];
    assert.deepEqual(
      kernel.calls.map((c) => (c[1] === "message" ? c[4]?.split(" ")[0] : c[1])),
      ["status", ...createsThenRead, ...createsThenRead], // the first check has no status to trust yet
    );
  });

  it(`counts a read in flight as the newest: the next starts only once that one predates ${N} changes`, async () => {
    const { engine, kernel } = await openEngine(new FakeKernel(), undefined, cached);
    await engine.createVolume({ name: "v0", sizeBytes: MiB });
    await settle();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const run = kernel.run.bind(kernel);
    const started: number[] = [];
    kernel.run = async (file, args, options) => {
      if (args[0] === "status") {
        started.push(kernel.calls.length);
        await gate; // reads hang until released
      }
      return run(file, args, options);
    };
    // Up to v15 a check still trusts v0's status (16 changes at most), so none waits for the hung read.
    for (let i = 1; i <= 15; i++) {
      await engine.createVolume({ name: `v${i}`, sizeBytes: MiB });
      await settle();
    }
    assert.equal(started.length, 1, `v${N - 1} started a read (${N} changes after v0's); v${N}-v15 did not`);
    release();
    await settle(); // the read lands
    for (let i = 16; i <= 2 * N - 2; i++) {
      await engine.createVolume({ name: `v${i}`, sizeBytes: MiB });
      await settle();
    }
    assert.equal(started.length, 1);
    await engine.createVolume({ name: `v${2 * N - 1}`, sizeBytes: MiB });
    await settle();
    assert.equal(started.length, 2, `v${2 * N - 1} is the ${N}th change after the read that was in flight`);
  });

  it("reads the status after every change once the last read is three quarters of its lifetime old", async () => {
    const statusTtlMs = 100;
    const { engine, kernel } = await openEngine(new FakeKernel(), undefined, { statusTtlMs });
    kernel.calls = [];
    for (const name of ["v1", "v2"]) {
      await new Promise((r) => setTimeout(r, statusTtlMs * STATUS_REFRESH_AFTER_TTL_SHARE + 10));
      await engine.createVolume({ name, sizeBytes: MiB });
      await settle();
    }
    assert.equal(kernel.calls.filter((c) => c[1] === "status").length, 2, "one after each create");
  });
});

describe("ThinPoolEngine locking (fake kernel)", () => {
  it("answers pool status while a slow pool operation holds the pool lock", async () => {
    const kernel = new FakeKernel();
    const { engine } = await openEngine(kernel);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slowRun = kernel.run.bind(kernel);
    kernel.run = async (file, args, options) => {
      if (args.includes("create_thin 0")) await gate;
      return slowRun(file, args, options);
    };
    const creating = engine.createVolume({ name: "slow", sizeBytes: MiB });
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(engine.isBusy("slow"), true);
    const usage = await engine.poolUsage("p"); // must not wait for the create
    assert.ok(usage.dataBytes > 0);
    assert.equal(
      engine.getDevice("slow")?.state,
      DeviceState.Creating,
      "the intent is visible while in flight",
    );
    release();
    await creating;
    assert.equal(engine.getDevice("slow")?.state, DeviceState.Inactive);
  });

  it("serialises pool messages: concurrent creates never interleave their intent and set_transaction_id", async () => {
    const { engine, kernel } = await openEngine();
    await Promise.all(
      Array.from({ length: 10 }, (_, i) => engine.createVolume({ name: `v${i}`, sizeBytes: MiB })),
    );
    const msgs = messages(kernel);
    for (let i = 0; i < msgs.length; i += 2) {
      assert.match(msgs[i] ?? "", /^create_thin \d+$/);
      assert.match(msgs[i + 1] ?? "", new RegExp(`^set_transaction_id ${i / 2} ${i / 2 + 1}$`));
    }
    assert.equal(kernel.transactionId, 10n);
    assert.deepEqual(
      [...kernel.thinIds].sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
  });
});
