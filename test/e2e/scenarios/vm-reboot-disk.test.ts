// Runs on the HOST and boots VMs through the harness: proves that disk images persist across boots and
// across an abrupt power loss (qemu SIGKILLed), which later reboot/crash scenarios build on.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { runInVm, type VmDisk } from "../harness/vm.js";

const BOOT_TIMEOUT_MS = 5 * 60_000;

/** Writes $1 at offset 0 of /dev/vda and makes it durable (fsync of the block device). */
const WRITE_TOKEN = `printf '%s' "$1" | dd of=/dev/vda bs=4096 conv=sync,fsync status=none`;
/** Prints the first $1 bytes of /dev/vda on a line of their own. */
const READ_TOKEN = `dd if=/dev/vda bs=4096 count=1 status=none | head -c "$1"; echo`;

describe("VM disks across boots", function () {
  this.timeout(20 * 60_000);
  let work: string;
  let disk: VmDisk;
  let token: string;

  beforeEach(async function () {
    work = await mkdtemp(path.join(os.tmpdir(), "thinpool-scenario-"));
    disk = { path: path.join(work, "persist.img"), sizeBytes: 64 * 1024 * 1024, serial: "persist" };
    token = `thinpool-e2e-${randomBytes(8).toString("hex")}`;
  });

  afterEach(async function () {
    await rm(work, { recursive: true, force: true });
  });

  async function readBack(): Promise<string> {
    const result = await runInVm({
      command: ["sh", "-c", READ_TOKEN, "sh", String(token.length)],
      disks: [disk],
      timeoutMs: BOOT_TIMEOUT_MS,
    });
    assert.equal(result.exitCode, 0, result.output);
    return result.output;
  }

  it("sees in the second boot what the first boot wrote", async function () {
    const first = await runInVm({
      command: ["sh", "-c", WRITE_TOKEN, "sh", token],
      disks: [disk],
      timeoutMs: BOOT_TIMEOUT_MS,
    });
    assert.equal(first.exitCode, 0, first.output);
    assert.ok((await readBack()).split("\n").includes(token), "token not found on the disk after reboot");
  });

  it("keeps data synced before a power loss", async function () {
    const marker = `SYNCED-${randomBytes(6).toString("hex")}`;
    const script = [
      `${WRITE_TOKEN} || exit 1`,
      // Everything above is durable once this line is printed; the harness pulls the plug on it.
      `echo "$2"`,
      // Keep the disk busy with unsynced writes elsewhere until the VM dies, like a real workload would.
      `i=0; while :; do printf 'junk-%s' "$i" | dd of=/dev/vda bs=4096 seek=16 conv=sync status=none; i=$((i+1)); done`,
    ].join("\n");
    const first = await runInVm({
      command: ["sh", "-c", script, "sh", token, marker],
      disks: [disk],
      timeoutMs: BOOT_TIMEOUT_MS,
      killWhen: { marker },
    });
    assert.equal(first.killed, true, `the VM was not killed at the marker; output:\n${first.output}`);
    assert.equal(first.exitCode, null);
    assert.ok((await readBack()).split("\n").includes(token), "synced token lost after power loss");
  });

  it("pulls the plug after a delay", async function () {
    const result = await runInVm({
      command: ["sleep", "3600"],
      disks: [disk],
      timeoutMs: BOOT_TIMEOUT_MS,
      killWhen: { afterMs: 2000 },
    });
    assert.equal(result.killed, true);
    assert.equal(result.exitCode, null);
  });
});
