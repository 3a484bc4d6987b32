// Runs on the HOST. Power loss: each cycle boots the VM on the same disks, puts a write load and a stream of
// snapshot creations (with deletes) on a volume, and pulls the plug (qemu SIGKILL, no sync, no unmount) once
// the cycle's data is synced. The next boot must start the engine, reconcile, reactivate, and find every
// file synced before any cut intact (test/e2e/support/power-loss-phase.ts).
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { runInVm, type VmDisk } from "../harness/vm.js";

const CYCLES = 3;

describe("power loss in the middle of writes and snapshot creation", function () {
  this.timeout(40 * 60_000);
  let work: string;
  let disks: VmDisk[];
  const env = {
    THINPOOL_VM: "1",
    THINPOOL_E2E_DATA_DEV: "/dev/vda",
    THINPOOL_E2E_META_DEV: "/dev/vdb",
    THINPOOL_E2E_STATE_DEV: "/dev/vdc",
  };

  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "thinpool-power-"));
    disks = [
      { path: path.join(work, "data.img"), sizeBytes: 1024 ** 3, serial: "data" },
      { path: path.join(work, "meta.img"), sizeBytes: 64 * 1024 ** 2, serial: "meta" },
      { path: path.join(work, "state.img"), sizeBytes: 256 * 1024 ** 2, serial: "state" },
    ];
  });

  after(async () => rm(work, { recursive: true, force: true }));

  it(`survives ${CYCLES} cuts: reconciles, reactivates, and every synced byte is intact`, async () => {
    let verified = { files: 0, bytes: 0 };
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const load = await runInVm({
        command: ["node", "dist/test/e2e/support/power-loss-phase.js", "load", String(cycle)],
        env,
        disks,
        timeoutMs: 10 * 60_000,
        killWhen: { marker: "CUT-HERE" },
      });
      assert.equal(load.killed, true, `cycle ${cycle}: the plug was pulled (${load.output.slice(-2000)})`);
      const check = await runInVm({
        command: ["node", "dist/test/e2e/support/power-loss-phase.js", "verify"],
        env,
        disks,
        timeoutMs: 10 * 60_000,
      });
      assert.equal(check.exitCode, 0, check.output);
      const line = check.output.split("\n").find((l) => l.startsWith("POWER-LOSS-RESULT "));
      assert.ok(line, check.output);
      const result = JSON.parse(line.slice("POWER-LOSS-RESULT ".length)) as {
        files: number;
        bytes: number;
        bad: string[];
        halfDone: string[];
      };
      assert.deepEqual(result.bad, [], `cycle ${cycle}: files synced before the cut changed`);
      assert.deepEqual(result.halfDone, [], `cycle ${cycle}: devices left half-done after reconciliation`);
      assert.equal(result.files, cycle + 1);
      verified = result;
    }
    process.stdout.write(
      `      power-loss: ${CYCLES} cycles, ${verified.files} files and ${verified.bytes} bytes verified after the last cut\n`,
    );
  });
});
