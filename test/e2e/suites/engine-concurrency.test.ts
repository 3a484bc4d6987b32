/**
 * Many callers at once against one real pool (runs inside the VM): creates, snapshots of shared origins,
 * activations, grows and deletes interleave. Afterwards a checker compares the store with the kernel: the
 * ids in the pool's metadata are exactly the store's devices plus quarantined ids, every device the store
 * calls active has a dm device with the right table, nothing is left suspended or half-done.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StateStore } from "../../../src/state/store.js";
import { DeviceState } from "../../../src/state/types.js";
import { ThinPoolEngine } from "../../../src/thinpool/engine.js";
import { EngineError } from "../../../src/thinpool/errors.js";
import { parseDmInfo, parseThinTable } from "../../../src/thinpool/status.js";
import {
  E2E_DATA_DEV,
  E2E_META_DEV,
  removeAllDmDevices,
  sh,
  silentLogger,
  zeroHead,
} from "../support/vm-env.js";

const MiB = 1024 * 1024;

describe("engine under concurrent callers on a real pool", function () {
  this.timeout(600_000);
  let engine: ThinPoolEngine;
  let statePath: string;

  before(async () => {
    await removeAllDmDevices();
    await zeroHead(E2E_META_DEV);
    statePath = join(mkdtempSync(join(tmpdir(), "engine-conc-")), "state.db");
    engine = await ThinPoolEngine.open({
      store: StateStore.open(statePath),
      logger: silentLogger,
      pools: [{ name: "e2e", source: { type: "devices", data: E2E_DATA_DEV, metadata: E2E_META_DEV } }],
    });
  });

  after(() => engine?.close());

  it("runs 8 clients of mixed operations at once and leaves store and kernel in agreement", async () => {
    const origins = ["o0", "o1", "o2"];
    for (const o of origins) {
      await engine.createVolume({ name: o, sizeBytes: 16 * MiB });
      await engine.activate(o);
    }
    let operations = 0;
    const refusals: string[] = [];
    const client = async (c: number) => {
      for (let i = 0; i < 6; i++) {
        const origin = origins[(c + i) % origins.length] as string;
        const steps: (() => Promise<unknown>)[] = [
          () => engine.createVolume({ name: `c${c}-v${i}`, sizeBytes: 8 * MiB }),
          () => engine.createSnapshot({ name: `c${c}-s${i}`, source: origin, kind: "snapshot" }),
          () => engine.activate(`c${c}-v${i}`),
          () => engine.resize(`c${c}-v${i}`, 12 * MiB),
          () => engine.createSnapshot({ name: `c${c}-r${i}`, source: `c${c}-s${i}`, kind: "volume" }),
          () => engine.deactivate(`c${c}-v${i}`),
          () => engine.deleteDevice(i % 2 ? `c${c}-v${i}` : `c${c}-s${i}`),
          () => engine.poolUsage("e2e"),
        ];
        for (const step of steps) {
          operations++;
          try {
            await step();
          } catch (err) {
            // Only refusals the engine owns are acceptable; anything else fails the test.
            if (!(err instanceof EngineError)) throw err;
            refusals.push(`${err.code}: ${err.message}`);
          }
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, c) => client(c)));
    process.stdout.write(`      ${operations} operations, ${refusals.length} refusals\n`);
    assert.deepEqual(refusals, [], "no operation on its own devices should be refused");

    // Checker: store vs kernel.
    const devices = engine.listDevices();
    assert.ok(
      devices.every((d) => d.pending === null && d.state !== DeviceState.Faulty),
      "nothing half-done or faulty",
    );
    const store = StateStore.open(statePath);
    const expectedIds = [
      ...devices.map((d) => d.deviceId),
      ...store.listQuarantined("e2e").map((q) => q.deviceId),
    ].sort((a, b) => a - b);
    store.close();
    await sh("dmsetup", ["message", "thinpool-csi-e2e", "0", "reserve_metadata_snap"]);
    let ids: number[];
    try {
      ids = (await sh("thin_ls", ["--metadata-snap", "--no-headers", "--format", "DEV", E2E_META_DEV]))
        .split("\n")
        .map((s) => Number(s.trim()))
        .filter((n) => !Number.isNaN(n))
        .sort((a, b) => a - b);
    } finally {
      await sh("dmsetup", ["message", "thinpool-csi-e2e", "0", "release_metadata_snap"]);
    }
    assert.deepEqual(ids, expectedIds, "pool ids == store devices + quarantined ids");
    const infos = parseDmInfo(await sh("dmsetup", ["info"])).filter((i) => i.name.startsWith("tpcsi-"));
    assert.ok(
      infos.every((i) => !i.suspended),
      "no device left suspended",
    );
    const active = devices.filter((d) => d.state === DeviceState.Active);
    assert.deepEqual(
      infos.map((i) => i.name).sort(),
      active.map((d) => `tpcsi-${d.name}`).sort(),
      "dm devices == active rows",
    );
    for (const d of active) {
      const table = parseThinTable(await sh("dmsetup", ["table", `tpcsi-${d.name}`]));
      assert.equal(table.deviceId, d.deviceId);
      assert.equal(table.lengthSectors * 512, d.sizeBytes);
    }
  });
});
