/**
 * The engine on an LVM thin pool (runs inside the VM, on the spare disk). LVM records the pool's expected
 * transaction id in its VG metadata and refuses to activate a pool whose id moved, so the engine must
 * recognise an LVM pool (dm uuid "LVM-...") and leave the id alone. Proven here by LVM deactivating and
 * reactivating the pool after the engine made devices in it, and the engine picking them up again.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StateStore } from "../../../src/state/store.js";
import { DeviceState } from "../../../src/state/types.js";
import { ThinPoolEngine } from "../../../src/thinpool/engine.js";
import { parsePoolStatus } from "../../../src/thinpool/status.js";
import { E2E_STATE_DEV, removeAllDmDevices, sh, silentLogger, zeroHead } from "../support/vm-env.js";

const MiB = 1024 * 1024;

describe("engine on an LVM thin pool", function () {
  this.timeout(300_000);
  const statePath = join(mkdtempSync(join(tmpdir(), "lvm-e2e-")), "state.db");
  const open = () =>
    ThinPoolEngine.open({
      store: StateStore.open(statePath),
      logger: silentLogger,
      pools: [{ name: "lvm", source: { type: "existing", device: "tpvg-pool" } }],
    });
  const sum = async (path: string) =>
    (await sh("sh", ["-c", `head -c ${4 * MiB} ${path} | sha256sum`])).split(" ")[0];

  before(async () => {
    await removeAllDmDevices();
    await zeroHead(E2E_STATE_DEV);
    await sh("pvcreate", ["-qy", E2E_STATE_DEV]);
    await sh("vgcreate", ["-q", "tpvg", E2E_STATE_DEV]);
    await sh("lvcreate", ["-qy", "--type", "thin-pool", "-L", "128M", "-n", "pool", "tpvg"]);
  });

  after(async () => {
    await sh("vgchange", ["-an", "tpvg"]).catch(() => undefined);
    await removeAllDmDevices().catch(() => undefined);
  });

  it("makes devices without moving LVM's transaction id; LVM cycles the pool; the engine reactivates", async () => {
    let engine = await open();
    const path = await engine.activate(
      (await engine.createVolume({ name: "lv-vol", sizeBytes: 32 * MiB })).name,
    );
    await sh("dd", ["if=/dev/urandom", `of=${path}`, "bs=1M", "count=4", "oflag=direct"]);
    const before = await sum(path);
    await engine.createSnapshot({ name: "lv-snap", source: "lv-vol", kind: "snapshot" });
    assert.equal(
      parsePoolStatus(await sh("dmsetup", ["status", "tpvg-pool"])).transactionId,
      0n,
      "LVM's id untouched",
    );
    engine.close();

    // What a node shutdown does: the volume's dm device goes away, then LVM takes the pool down and up.
    await sh("dmsetup", ["remove", "tpcsi-lv-vol"]);
    await sh("vgchange", ["-an", "tpvg"]);
    await sh("vgchange", ["-ay", "tpvg"]);
    assert.match(await sh("lvs", ["--noheadings", "-o", "lv_name,transaction_id", "tpvg"]), /pool\s+0/);

    engine = await open();
    assert.equal(engine.lastReconcile?.reactivated, 1);
    assert.equal(engine.getDevice("lv-vol")?.state, DeviceState.Active);
    assert.equal(engine.getDevice("lv-snap")?.state, DeviceState.Inactive);
    assert.equal(await sum("/dev/mapper/tpcsi-lv-vol"), before);
    const restored = await engine.activate(
      (await engine.createSnapshot({ name: "lv-rest", source: "lv-snap", kind: "volume" })).name,
    );
    assert.equal(await sum(restored), before);
    await engine.deactivate("lv-rest");
    await engine.deactivate("lv-vol");
    engine.close();
  });
});
