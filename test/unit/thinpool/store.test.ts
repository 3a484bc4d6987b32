import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { MIGRATIONS } from "../../../src/state/schema.js";
import { MAX_DEVICE_ID, StateStore } from "../../../src/state/store.js";
import { DeviceState } from "../../../src/state/types.js";

function newStore(): StateStore {
  const store = StateStore.open(":memory:");
  store.upsertPool({
    name: "p",
    dmName: "pool0",
    source: { type: "existing" },
    ownsTransactionId: true,
    blockBytes: 65536,
  });
  return store;
}

function addDevice(
  store: StateStore,
  name: string,
  deviceId: number,
  extra: Partial<Parameters<StateStore["insertDevice"]>[0]> = {},
) {
  return store.insertDevice({
    name,
    pool: "p",
    deviceId,
    kind: "volume",
    sizeBytes: 65536,
    parent: null,
    state: DeviceState.Inactive,
    pending: null,
    requestName: null,
    attributes: {},
    ...extra,
  });
}

describe("StateStore", () => {
  it("opens with WAL, synchronous=FULL, foreign keys and the latest schema", () => {
    const dir = mkdtempSync(join(tmpdir(), "tpcsi-store-"));
    try {
      const store = StateStore.open(join(dir, "state.db"));
      assert.equal(store.db.pragma("journal_mode", { simple: true }), "wal");
      assert.equal(store.db.pragma("synchronous", { simple: true }), 2);
      assert.equal(store.db.pragma("foreign_keys", { simple: true }), 1);
      assert.equal(store.schemaVersion, MIGRATIONS.length);
      assert.equal(MIGRATIONS.length, 4);
      store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses a database from a newer driver instead of guessing", () => {
    const dir = mkdtempSync(join(tmpdir(), "tpcsi-store-"));
    try {
      const db = new Database(join(dir, "state.db"));
      db.pragma("user_version = 99");
      db.close();
      assert.throws(
        () => StateStore.open(join(dir, "state.db")),
        /schema version 99 is newer than this driver knows/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("allocates the lowest free id, skipping used and quarantined ids", () => {
    const store = newStore();
    assert.equal(store.lowestFreeDeviceId("p"), 0);
    addDevice(store, "a", 0);
    addDevice(store, "b", 1);
    addDevice(store, "c", 3);
    assert.equal(store.lowestFreeDeviceId("p"), 2);
    store.quarantineId("p", 2, "test");
    assert.equal(store.lowestFreeDeviceId("p"), 4);
    store.deleteDevice("a");
    assert.equal(store.lowestFreeDeviceId("p"), 0);
  });

  it("searches from where its last search ended, and goes back for ids freed by a delete or a release", () => {
    const store = newStore();
    for (let id = 0; id < 100; id++) addDevice(store, `d${id}`, id);
    assert.equal(store.lowestFreeDeviceId("p"), 100);
    addDevice(store, "d100", 100);
    store.quarantineId("p", 101, "test");
    assert.equal(store.lowestFreeDeviceId("p"), 102);
    store.releaseQuarantinedId("p", 101);
    assert.equal(store.lowestFreeDeviceId("p"), 101);
    store.deleteDevice("d50");
    assert.equal(store.lowestFreeDeviceId("p"), 50);
    addDevice(store, "again", 50);
    assert.equal(store.lowestFreeDeviceId("p"), 101);
    // A delete rolled back leaves the id used: the search still answers the lowest free one.
    assert.throws(() =>
      store.transaction(() => {
        store.deleteDevice("d7");
        throw new Error("rolled back");
      }),
    );
    assert.equal(store.lowestFreeDeviceId("p"), 101);
  });

  it("finds the gap after the highest id and reports exhaustion at 2^24", () => {
    const store = newStore();
    addDevice(store, "last", MAX_DEVICE_ID);
    assert.equal(store.lowestFreeDeviceId("p"), 0);
    addDevice(store, "first", 0);
    assert.equal(store.lowestFreeDeviceId("p"), 1);
  });

  it("enforces one device per id and one request name per kind", () => {
    const store = newStore();
    addDevice(store, "a", 5, { requestName: "pvc-1" });
    assert.throws(() => addDevice(store, "b", 5), /UNIQUE/);
    assert.throws(() => addDevice(store, "c", 6, { requestName: "pvc-1" }), /UNIQUE/);
    addDevice(store, "d", 7, { requestName: "pvc-1", kind: "snapshot" });
    assert.equal(store.findDeviceByRequestName("volume", "pvc-1")?.name, "a");
    assert.equal(store.findDeviceByRequestName("snapshot", "pvc-1")?.name, "d");
  });

  it("refuses devices in unknown pools (foreign key)", () => {
    const store = newStore();
    assert.throws(
      () =>
        store.insertDevice({
          name: "x",
          pool: "nope",
          deviceId: 1,
          kind: "volume",
          sizeBytes: 1,
          parent: null,
          state: DeviceState.Inactive,
          pending: null,
          requestName: null,
          attributes: {},
        }),
      /FOREIGN KEY/,
    );
  });

  it("round-trips pending intents, attributes and patches", () => {
    const store = newStore();
    addDevice(store, "a", 1, {
      state: DeviceState.Creating,
      pending: { op: "create", txid: 4 },
      attributes: { fsType: "ext4" },
    });
    const got = store.getDevice("a");
    assert.deepEqual(got?.pending, { op: "create", txid: 4 });
    assert.deepEqual(got?.attributes, { fsType: "ext4" });
    const updated = store.updateDevice("a", {
      state: DeviceState.Inactive,
      pending: null,
      sizeBytes: 131072,
    });
    assert.equal(updated.pending, null);
    assert.equal(updated.sizeBytes, 131072);
    assert.throws(() => store.updateDevice("missing", { state: DeviceState.Active }), /not in the store/);
  });

  it("pages devices in name order and sums provisioned bytes", () => {
    const store = newStore();
    for (const [i, n] of ["c", "a", "b", "d"].entries()) addDevice(store, n, i);
    assert.deepEqual(
      store.listDevices({ limit: 2 }).map((d) => d.name),
      ["a", "b"],
    );
    assert.deepEqual(
      store.listDevices({ afterName: "b", limit: 2 }).map((d) => d.name),
      ["c", "d"],
    );
    assert.deepEqual(store.provisioned("p"), { bytes: 4 * 65536, count: 4 });
  });

  it("keeps each pool's provisioned total equal to the sum over its devices, a rolled-back change included", () => {
    const store = newStore();
    store.upsertPool({
      name: "q",
      dmName: "pool1",
      source: { type: "existing" },
      ownsTransactionId: true,
      blockBytes: 65536,
    });
    const summed = (pool: string) =>
      store.db
        .prepare(
          `SELECT COALESCE(SUM(size_bytes), 0) AS bytes, COUNT(*) AS count FROM devices WHERE pool = ?`,
        )
        .get(pool) as { bytes: number; count: number };
    const check = (step: string) => {
      for (const pool of ["p", "q"])
        assert.deepEqual(store.provisioned(pool), summed(pool), `${step}, pool ${pool}`);
    };
    assert.deepEqual(store.provisioned("p"), { bytes: 0, count: 0 });
    for (let i = 0; i < 5; i++) addDevice(store, `v${i}`, i, { sizeBytes: (i + 1) * 65536 });
    addDevice(store, "w0", 0, { pool: "q", sizeBytes: 7 * 65536 });
    check("after inserts");
    store.updateDevice("v1", { sizeBytes: 40 * 65536 });
    store.updateDevice("v2", { state: DeviceState.Active });
    check("after a grow and a state change");
    store.deleteDevice("v0");
    store.deleteDevice("w0");
    check("after deletes");
    assert.throws(() =>
      store.transaction(() => {
        addDevice(store, "v9", 9);
        store.deleteDevice("v3");
        throw new Error("abandoned");
      }),
    );
    check("after a rolled-back transaction");
    assert.deepEqual(store.provisioned("p"), { bytes: (40 + 3 + 4 + 5) * 65536, count: 4 });
  });

  it("totals the devices of a version-3 database when it migrates", () => {
    const dir = mkdtempSync(join(tmpdir(), "tpcsi-store-"));
    try {
      const db = new Database(join(dir, "state.db"));
      for (const migration of MIGRATIONS.slice(0, 3)) db.exec(migration);
      db.pragma("user_version = 3");
      db.exec(`INSERT INTO pools VALUES ('p', 'pool0', '{}', 1, 0, 65536, 'now', 'now')`);
      const insert = db.prepare(
        `INSERT INTO devices (name, pool, device_id, kind, size_bytes, state, created_at, updated_at)
         VALUES (?, 'p', ?, 'volume', ?, 'inactive', 'now', 'now')`,
      );
      insert.run("a", 0, 65536);
      insert.run("b", 1, 3 * 65536);
      db.close();
      const store = StateStore.open(join(dir, "state.db"));
      assert.deepEqual(store.provisioned("p"), { bytes: 4 * 65536, count: 2 });
      addDevice(store, "c", 2);
      assert.deepEqual(store.provisioned("p"), { bytes: 5 * 65536, count: 3 });
      store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rolls back a failed transaction completely", () => {
    const store = newStore();
    assert.throws(() =>
      store.transaction(() => {
        addDevice(store, "a", 1);
        throw new Error("boom");
      }),
    );
    assert.equal(store.getDevice("a"), undefined);
  });

  it("tracks node paths per volume", () => {
    const store = newStore();
    store.putNodePath("v", "stage", "/s", { fsType: "ext4" });
    store.putNodePath("v", "publish", "/t1", { readonly: false });
    assert.equal(store.isInUseOnNode("v"), true);
    assert.deepEqual(store.getNodePaths("v", "stage")[0]?.args, { fsType: "ext4" });
    assert.equal(store.findNodePath("publish", "/t1")?.volume, "v");
    store.deleteNodePath("v", "stage", "/s");
    store.deleteNodePath("v", "publish", "/t1");
    assert.equal(store.isInUseOnNode("v"), false);
  });
});
