/**
 * `npm run demo` inside the VM (where dm-thin exists): the whole job succeeds, and neither a normal run nor
 * an interrupted one leaves a dm device, a loop device, a mount or a temporary directory behind.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { execa } from "execa";
import { env, removeAllDmDevices, sh } from "../support/vm-env.js";

async function leftovers(): Promise<string[]> {
  const found: string[] = [];
  const dm = (await sh("dmsetup", ["ls"])).split("\n").filter((l) => /tpcsi-|thinpool-csi-/.test(l));
  found.push(...dm.map((l) => `dm: ${l}`));
  const loops = (await sh("losetup", ["--list", "--noheadings", "--output", "BACK-FILE"])).split("\n");
  found.push(...loops.filter((l) => l.includes("thinpool-csi-demo")).map((l) => `loop: ${l.trim()}`));
  const mounts = readFileSync("/proc/self/mountinfo", "utf8").split("\n");
  found.push(...mounts.filter((l) => l.includes("thinpool-csi-demo")).map((l) => `mount: ${l}`));
  found.push(
    ...readdirSync(tmpdir())
      .filter((d) => d.startsWith("thinpool-csi-demo-"))
      .map((d) => `dir: ${d}`),
  );
  return found;
}

describe("npm run demo on a real kernel", function () {
  this.timeout(600_000);

  before(async () => {
    await removeAllDmDevices();
  });

  it("runs the whole job and cleans up", async () => {
    const run = await execa("node", ["dist/scripts/demo.js", "--inside-vm"], { env, reject: false });
    assert.equal(run.exitCode, 0, run.stderr + run.stdout);
    assert.match(run.stdout, /restored file says: hello from thinpool-csi/);
    assert.match(run.stdout, /new size: 384 MiB/);
    assert.deepEqual(await leftovers(), []);
  });

  it("cleans up when interrupted in the middle", async () => {
    // execa forces a SIGKILL only after a SIGTERM, so the clean-up being tested (a few seconds) can finish.
    const child = execa("node", ["dist/scripts/demo.js", "--inside-vm"], { env, reject: false });
    let output = "";
    await new Promise<void>((resolve) => {
      child.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("NodePublishVolume")) resolve();
      });
    });
    child.kill("SIGINT");
    const result = await child;
    assert.notEqual(result.exitCode, 0, "an interrupted demo does not claim success");
    assert.match(result.stdout + result.stderr, /interrupted/);
    assert.deepEqual(await leftovers(), []);
  });
});
