import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { syncFilesystemOn } from "../../../src/node/filesystem.js";
import { parseMountInfo } from "../../../src/node/mounts.js";
import type { CommandResult, CommandRunner } from "../../../src/thinpool/command.js";

/** Records what would be run; the write-back itself runs for real in the VM engine suite. */
class RecordingRunner implements CommandRunner {
  calls: string[][] = [];
  async run(file: string, args: readonly string[]): Promise<CommandResult> {
    this.calls.push([file, ...args]);
    return { stdout: "", stderr: "" };
  }
}

describe("writing back a device's filesystem before a suspend", () => {
  it("parses the device number of each mount from mountinfo", () => {
    const [entry] = parseMountInfo(
      "36 35 253:7 / /var/lib/kubelet/plugins/x/globalmount rw,relatime shared:1 - ext4 /dev/mapper/tpcsi-v1 rw\n",
    );
    assert.equal(entry?.devno, "253:7");
    assert.equal(entry?.mountPoint, "/var/lib/kubelet/plugins/x/globalmount");
  });

  it("runs sync -f on where the device is mounted, and nothing for a device that is not mounted", async () => {
    // The host's own root mount, read from this process's mountinfo as the driver reads it.
    const root = parseMountInfo(readFileSync("/proc/self/mountinfo", "utf8")).find(
      (m) => m.mountPoint === "/",
    );
    assert.ok(root, "this machine has a root mount");
    const runner = new RecordingRunner();
    assert.equal(await syncFilesystemOn(runner, root.devno), true);
    const [first] = runner.calls;
    assert.equal(first?.[0], "sync");
    assert.equal(first?.[1], "-f");

    const idle = new RecordingRunner();
    assert.equal(await syncFilesystemOn(idle, "4095:1048575"), false);
    assert.deepEqual(idle.calls, []);
  });
});
