import assert from "node:assert/strict";
import type { CommandRunner } from "../../../src/thinpool/command.js";
import { Dmsetup, WHOLE_HOST_ATTEMPTS } from "../../../src/thinpool/dmsetup.js";
import { CommandError, isErrno } from "../../../src/thinpool/errors.js";
import { FakeKernel } from "./fake-kernel.js";

describe("Dmsetup.createMany", () => {
  it("creates every device in one process, quoting the concise format's separators", async () => {
    const kernel = new FakeKernel();
    const dm = new Dmsetup(kernel);
    await dm.createMany([
      { name: "plain", table: "0 8 error", uuid: "U-1" },
      { name: "odd,name;with\\quotes", table: "0 8 error" },
    ]);
    assert.equal(kernel.calls.length, 1);
    assert.equal(kernel.devices.get("plain")?.uuid, "U-1");
    assert.equal(kernel.devices.get("plain")?.table, "0 8 error");
    assert.equal(kernel.devices.get("odd,name;with\\quotes")?.uuid, "");
  });

  it("runs nothing for no devices", async () => {
    const kernel = new FakeKernel();
    await new Dmsetup(kernel).createMany([]);
    assert.equal(kernel.calls.length, 0);
  });
});

describe("Dmsetup reads of the whole host", () => {
  /** A runner whose first `failures` whole-host listings fail as dmsetup does when a device goes mid-listing. */
  function racingRunner(failures: number) {
    const calls: string[][] = [];
    const runner: CommandRunner = {
      run(_file, args) {
        calls.push([...args]);
        const named = args.length > 3 && args[0] === "status" && args[1] !== "--target";
        if (named || failures-- > 0)
          return Promise.reject(new CommandError("dmsetup", args, 1, "ENXIO", "Device does not exist."));
        return Promise.resolve({ stdout: "tpcsi-a: 0 8 thin 0 -\ntpcsi-b: 0 8 thin 0 -", stderr: "" });
      },
    };
    return { runner, calls };
  }

  it("takes the listing again when a device is removed while dmsetup walks the host", async () => {
    const { runner, calls } = racingRunner(2);
    const statuses = await new Dmsetup(runner).thinStatusOf(["tpcsi-a", "tpcsi-gone", "tpcsi-b"]);
    assert.deepEqual([...statuses.keys()], ["tpcsi-a", "tpcsi-b"]);
    assert.deepEqual(
      calls.map((args) => args.join(" ")),
      [
        "status tpcsi-a tpcsi-gone tpcsi-b",
        "status --target thin",
        "status --target thin",
        "status --target thin",
      ],
    );
  });

  it("gives up with the kernel's ENXIO after a bounded number of listings", async () => {
    const { runner, calls } = racingRunner(Number.POSITIVE_INFINITY);
    await assert.rejects(new Dmsetup(runner).statusAll("thin"), (err: unknown) => isErrno(err, "ENXIO"));
    assert.equal(calls.length, WHOLE_HOST_ATTEMPTS);
  });
});
