/**
 * One boot of the reboot scenario (runs inside the VM). `prepare`: make a pool, volumes and a snapshot,
 * write data and record checksums on the state disk. `verify` (the next boot, same disks): start the
 * engine, check every device is active or inactive as it should be and the data reads back intact.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { StateStore } from "../../../src/state/store.js";
import { DeviceState } from "../../../src/state/types.js";
import { ThinPoolEngine } from "../../../src/thinpool/engine.js";
import {
  E2E_DATA_DEV,
  E2E_META_DEV,
  E2E_STATE_DEV,
  sh,
  sha256File,
  silentLogger,
  zeroHead,
} from "./vm-env.js";

const MiB = 1024 * 1024;
const phase = process.argv[2];
mkdirSync("/mnt/state", { recursive: true });
if (phase === "prepare") {
  await zeroHead(E2E_META_DEV);
  await sh("mkfs.ext4", ["-q", "-F", E2E_STATE_DEV]);
}
await sh("mount", [E2E_STATE_DEV, "/mnt/state"]);
const engine = await ThinPoolEngine.open({
  store: StateStore.open("/mnt/state/state.db"),
  logger: silentLogger,
  pools: [{ name: "e2e", source: { type: "devices", data: E2E_DATA_DEV, metadata: E2E_META_DEV } }],
});
if (phase === "prepare") {
  for (const name of ["a", "b"]) {
    const path = await engine.activate((await engine.createVolume({ name, sizeBytes: 64 * MiB })).name);
    await sh("mkfs.ext4", ["-q", path]);
    mkdirSync(`/mnt/${name}`, { recursive: true });
    await sh("mount", [path, `/mnt/${name}`]);
    await sh("dd", ["if=/dev/urandom", `of=/mnt/${name}/data`, "bs=1M", "count=8", "conv=fsync"]);
  }
  await engine.createSnapshot({ name: "snap-a", source: "a", kind: "snapshot" });
  await sh("umount", ["/mnt/b"]);
  await engine.deactivate("b");
  const sums = { a: await sha256File("/mnt/a/data"), b: "" };
  await sh("mount", [await engine.activate("b"), "/mnt/b"]);
  sums.b = await sha256File("/mnt/b/data");
  await sh("umount", ["/mnt/b"]);
  await engine.deactivate("b");
  writeFileSync("/mnt/state/sums.json", JSON.stringify(sums));
  await sh("sync", []);
  process.stdout.write("PREPARED\n");
} else {
  const sums = JSON.parse(readFileSync("/mnt/state/sums.json", "utf8")) as { a: string; b: string };
  assert.equal(engine.lastReconcile?.reactivated, 1, "a was active and is reactivated");
  assert.equal(engine.getDevice("a")?.state, DeviceState.Active);
  assert.equal(engine.getDevice("b")?.state, DeviceState.Inactive, "b stays inactive");
  assert.equal(engine.getDevice("snap-a")?.state, DeviceState.Inactive, "snapshots stay inactive");
  const ls = await sh("dmsetup", ["ls"]);
  assert.ok(ls.includes("tpcsi-a") && !ls.includes("tpcsi-b") && !ls.includes("tpcsi-snap-a"), ls);
  mkdirSync("/mnt/a", { recursive: true });
  await sh("mount", ["/dev/mapper/tpcsi-a", "/mnt/a"]);
  assert.equal(await sha256File("/mnt/a/data"), sums.a);
  const restored = await engine.activate(
    (await engine.createSnapshot({ name: "r", source: "snap-a", kind: "volume" })).name,
  );
  mkdirSync("/mnt/r", { recursive: true });
  await sh("mount", [restored, "/mnt/r"]);
  assert.equal(await sha256File("/mnt/r/data"), sums.a);
  mkdirSync("/mnt/b", { recursive: true });
  await sh("mount", [await engine.activate("b"), "/mnt/b"]);
  assert.equal(await sha256File("/mnt/b/data"), sums.b);
  process.stdout.write("VERIFIED\n");
}
