import assert from "node:assert/strict";
import { Dmsetup } from "../../../src/thinpool/dmsetup.js";
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
