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
import { ThinPoolEngine } from "../../../src/thinpool/engine.js";
import { EngineError } from "../../../src/thinpool/errors.js";
import { E2E_DATA_DEV, E2E_META_DEV, removeAllDmDevices, silentLogger, zeroHead } from "../support/vm-env.js";
import { storeKernelProblems } from "../support/consistency.js";

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

    const problems = await storeKernelProblems({
      statePath,
      pool: "e2e",
      metadataDevice: E2E_META_DEV,
      allowQuarantined: true,
    });
    assert.deepEqual(problems, [], "store and kernel agree");
  });
});
