// Runs on the HOST: boots the VM twice on the same disks. The first boot builds a pool, volumes and a
// snapshot and writes data; the VM is then powered off without unmounting anything; the second boot starts
// the engine and checks reactivation and checksums (test/e2e/support/reboot-phase.ts).
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { runInVm, type VmDisk } from "../harness/vm.js";

describe("engine across a reboot (two boots, same disks)", function () {
  this.timeout(20 * 60_000);
  let work: string;
  let disks: VmDisk[];

  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "thinpool-reboot-"));
    disks = [
      { path: path.join(work, "data.img"), sizeBytes: 1024 ** 3, serial: "data" },
      { path: path.join(work, "meta.img"), sizeBytes: 64 * 1024 ** 2, serial: "meta" },
      { path: path.join(work, "state.img"), sizeBytes: 256 * 1024 ** 2, serial: "state" },
    ];
  });

  after(async () => rm(work, { recursive: true, force: true }));

  it("reactivates what was active, keeps the rest inactive, and every checksum matches", async () => {
    const env = {
      THINPOOL_VM: "1",
      THINPOOL_E2E_DATA_DEV: "/dev/vda",
      THINPOOL_E2E_META_DEV: "/dev/vdb",
      THINPOOL_E2E_STATE_DEV: "/dev/vdc",
    };
    const run = (phase: string) =>
      runInVm({
        command: ["node", "dist/test/e2e/support/reboot-phase.js", phase],
        env,
        disks,
        timeoutMs: 10 * 60_000,
      });
    const first = await run("prepare");
    assert.equal(first.exitCode, 0, first.output);
    assert.match(first.output, /PREPARED/);
    const second = await run("verify");
    assert.equal(second.exitCode, 0, second.output);
    assert.match(second.output, /VERIFIED/);
  });
});
