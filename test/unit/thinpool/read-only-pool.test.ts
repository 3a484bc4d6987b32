import assert from "node:assert/strict";
import { StateStore } from "../../../src/state/store.js";
import { DeviceState } from "../../../src/state/types.js";
import { EngineError } from "../../../src/thinpool/errors.js";
import { FakeKernel, openFakeEngine } from "./fake-kernel.js";

const MiB = 1024 * 1024;

const open = (kernel: FakeKernel, store: StateStore) => openFakeEngine(kernel, store);

/** What dm-thin answers to every message while the pool is read-only or failed (seen on 6.1 in the VM). */
function refuseMessages(kernel: FakeKernel, times = 1000): void {
  kernel.fail(
    (a) => a[1] === "message" && a[2] === "pool0",
    "device-mapper: message ioctl on pool0  failed: Operation not supported",
    times,
  );
}

describe("start-up on a read-only pool (fake kernel)", () => {
  for (const mode of ["ro", "Fail"]) {
    it(`starts on a ${mode} pool: unfinished creates and deletes wait, no metadata cross-check`, async () => {
      const kernel = new FakeKernel();
      const store = StateStore.open(":memory:");
      const first = await open(kernel, store);
      await first.createVolume({ name: "deleting", sizeBytes: MiB });
      await first.createVolume({ name: "creating", sizeBytes: MiB });
      await first.createVolume({ name: "active", sizeBytes: MiB });
      await first.activate("active");
      store.updateDevice("deleting", {
        state: DeviceState.Deleting,
        pending: { op: "delete", txid: 4, discard: false },
      });
      store.updateDevice("creating", { state: DeviceState.Creating, pending: { op: "create", txid: 9 } });
      kernel.devices.delete("tpcsi-active"); // as after a reboot
      kernel.poolMode = mode;
      refuseMessages(kernel);
      kernel.calls = [];

      const engine = await open(kernel, store);
      assert.equal(engine.getDevice("deleting")?.state, DeviceState.Deleting, "left for a writable pool");
      assert.equal(engine.getDevice("creating")?.state, DeviceState.Creating, "left for a writable pool");
      assert.equal(engine.getDevice("active")?.state, DeviceState.Active, "reactivated: reads still work");
      assert.equal(engine.lastReconcile?.faulty, 0);
      assert.deepEqual(
        kernel.calls.filter((c) => c[1] === "message"),
        [],
        "no message (reserve_metadata_snap, delete) was even tried",
      );
      assert.equal((await engine.deviceCondition("active")).abnormal, true);
    });
  }

  it("rolls the waiting delete forward at the next start once the pool is writable", async () => {
    const kernel = new FakeKernel();
    const store = StateStore.open(":memory:");
    const first = await open(kernel, store);
    await first.createVolume({ name: "deleting", sizeBytes: MiB });
    store.updateDevice("deleting", {
      state: DeviceState.Deleting,
      pending: { op: "delete", txid: 2, discard: false },
    });
    kernel.poolMode = "ro";
    await open(kernel, store);
    kernel.poolMode = "rw";
    const engine = await open(kernel, store);
    assert.equal(engine.getDevice("deleting"), undefined);
    assert.equal(kernel.thinIds.size, 0);
  });
});

describe("pool messages refused by a read-only pool", () => {
  it("are UNAVAILABLE-class (PoolUnavailable), not internal errors, and the delete can be retried", async () => {
    const kernel = new FakeKernel();
    const store = StateStore.open(":memory:");
    const engine = await open(kernel, store);
    await engine.createVolume({ name: "v1", sizeBytes: MiB });
    kernel.poolMode = "ro";
    refuseMessages(kernel, 1); // the delete message
    await assert.rejects(engine.deleteDevice("v1"), (err: unknown) => {
      assert.ok(err instanceof EngineError);
      assert.equal(err.code, "PoolUnavailable");
      assert.match(err.message, /\[EOPNOTSUPP\].*Operation not supported/);
      return true;
    });
    kernel.poolMode = "rw";
    await engine.deleteDevice("v1");
    assert.equal(engine.getDevice("v1"), undefined);
    assert.equal(kernel.thinIds.size, 0);
  });
});
