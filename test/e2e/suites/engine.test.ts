/**
 * The thin-pool engine against the real kernel (runs inside the VM). One story, in order: a pool is
 * created on blank disks, volumes are made, written, snapshotted under a writer, restored, grown, deleted,
 * an id collision is handled, the pool is re-assembled as after a reboot, and crashes at named points are
 * repaired by start-up reconciliation.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { execa, type ExecaChildProcess } from "execa";
import { StateStore } from "../../../src/state/store.js";
import { DeviceState } from "../../../src/state/types.js";
import { ExecaRunner, type CommandRunner } from "../../../src/thinpool/command.js";
import { ThinPoolEngine } from "../../../src/thinpool/engine.js";
import { parsePoolStatus, parseThinStatus } from "../../../src/thinpool/status.js";
import {
  E2E_DATA_DEV,
  E2E_META_DEV,
  env,
  removeAllDmDevices,
  sh,
  sha256File,
  silentLogger,
  zeroHead,
} from "../support/vm-env.js";

const MiB = 1024 * 1024;

describe("engine on a real dm-thin pool", function () {
  this.timeout(300_000);
  const dir = mkdtempSync(join(tmpdir(), "engine-e2e-"));
  const statePath = join(dir, "state.db");
  let engine: ThinPoolEngine;
  let fileSum = "";

  const open = async (spareThinIds = 0, runner?: CommandRunner) =>
    ThinPoolEngine.open({
      ...(runner ? { runner } : {}),
      store: StateStore.open(statePath),
      logger: silentLogger,
      pools: [{ name: "e2e", source: { type: "devices", data: E2E_DATA_DEV, metadata: E2E_META_DEV } }],
      spareThinIds,
    });
  const withStore = <T>(fn: (store: StateStore) => T): T => {
    const store = StateStore.open(statePath);
    try {
      return fn(store);
    } finally {
      store.close();
    }
  };
  const poolStatus = async () => parsePoolStatus(await sh("dmsetup", ["status", "thinpool-csi-e2e"]));
  const thinIds = async () => {
    await sh("dmsetup", ["message", "thinpool-csi-e2e", "0", "reserve_metadata_snap"]);
    try {
      const out = await sh("thin_ls", ["--metadata-snap", "--no-headers", "--format", "DEV", E2E_META_DEV]);
      return out
        .split("\n")
        .map((s) => Number(s.trim()))
        .filter((n) => !Number.isNaN(n))
        .sort((x, y) => x - y);
    } finally {
      await sh("dmsetup", ["message", "thinpool-csi-e2e", "0", "release_metadata_snap"]);
    }
  };
  const childOp = (crashAt: string, ...args: string[]) =>
    execa("node", ["dist/test/e2e/support/engine-op.js", statePath, E2E_DATA_DEV, E2E_META_DEV, ...args], {
      env: { ...env, THINPOOL_CSI_CRASH_AT: crashAt },
      reject: false,
    });

  before(async () => {
    await removeAllDmDevices();
    await zeroHead(E2E_META_DEV);
  });

  after(async () => {
    await sh("umount", ["-l", "/mnt/vol1"]).catch(() => undefined);
    await sh("umount", ["-l", "/mnt/rest1"]).catch(() => undefined);
    engine?.close();
  });

  it("creates a new pool on a blank metadata device", async () => {
    engine = await open();
    const status = await poolStatus();
    assert.equal(status.mode, "rw");
    assert.equal(status.transactionId, 0n);
    const table = (await sh("dmsetup", ["table", "thinpool-csi-e2e"])).trim();
    assert.match(table, /thin-pool .* 128 0 1 error_if_no_space$/);
  });

  it("creates, activates, formats, mounts and writes a volume; the transaction id follows", async () => {
    const device = await engine.createVolume({ name: "vol1", sizeBytes: 64 * MiB });
    assert.equal(device.state, DeviceState.Inactive);
    assert.equal((await poolStatus()).transactionId, 1n);
    const path = await engine.activate("vol1");
    // No lazy inode-table init: its background writes would blur the space accounting checked below.
    await sh("mkfs.ext4", ["-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", path]);
    mkdirSync("/mnt/vol1", { recursive: true });
    await sh("mount", [path, "/mnt/vol1"]);
    await sh("dd", ["if=/dev/urandom", "of=/mnt/vol1/data", "bs=1M", "count=4", "conv=fsync"]);
    fileSum = await sha256File("/mnt/vol1/data");
    assert.equal(engine.getDevice("vol1")?.state, DeviceState.Active);
  });

  it("snapshots the active origin while a writer runs; the restore is consistent and holds the synced data", async () => {
    const writer: ExecaChildProcess = execa(
      "sh",
      ["-c", "while :; do dd if=/dev/zero of=/mnt/vol1/stream bs=64k count=32 conv=fsync 2>/dev/null; done"],
      { reject: false },
    );
    await new Promise((r) => setTimeout(r, 1500));
    await engine.createSnapshot({ name: "snap1", source: "vol1", kind: "snapshot" });
    writer.kill("SIGKILL");
    await writer;
    const info = await sh("dmsetup", ["info", "tpcsi-vol1"]);
    assert.match(info, /State:\s+ACTIVE/, "the origin is resumed");
    assert.equal((await sh("dmsetup", ["ls"])).includes("tpcsi-snap1"), false, "the snapshot stays inactive");

    const restored = await engine.createSnapshot({
      name: "rest1",
      source: "snap1",
      kind: "volume",
      sizeBytes: 128 * MiB,
    });
    assert.equal(restored.sizeBytes, 128 * MiB);
    const path = await engine.activate("rest1");
    await sh("e2fsck", ["-fn", path]); // throws on a non-zero exit: the snapshot's filesystem is clean
    mkdirSync("/mnt/rest1", { recursive: true });
    await sh("mount", [path, "/mnt/rest1"]);
    assert.equal(await sha256File("/mnt/rest1/data"), fileSum);
    await sh("resize2fs", [path]);
    const df = await sh("df", ["-B1", "--output=size", "/mnt/rest1"]);
    assert.ok(Number(df.split("\n")[1]) > 100 * MiB, `restore grown to its larger size (df: ${df})`);
    await sh("umount", ["/mnt/rest1"]);
    await engine.deactivate("rest1");
  });

  it("grows an active, mounted volume online", async () => {
    const before = Number((await sh("df", ["-B1", "--output=size", "/mnt/vol1"])).split("\n")[1]);
    await engine.resize("vol1", 96 * MiB);
    await sh("resize2fs", ["/dev/mapper/tpcsi-vol1"]);
    const after = Number((await sh("df", ["-B1", "--output=size", "/mnt/vol1"])).split("\n")[1]);
    assert.ok(after > before + 20 * MiB, `grew from ${before} to ${after}`);
    assert.match(await sh("dmsetup", ["table", "tpcsi-vol1"]), new RegExp(`^0 ${(96 * MiB) / 512} thin `));
  });

  it("quarantines an id taken behind the store's back and uses the next", async () => {
    const store = StateStore.open(statePath);
    const free = store.lowestFreeDeviceId("e2e") as number;
    store.close();
    await sh("dmsetup", ["message", "thinpool-csi-e2e", "0", `create_thin ${free}`]);
    await sh("dmsetup", [
      "message",
      "thinpool-csi-e2e",
      "0",
      `set_transaction_id ${(await poolStatus()).transactionId} ${(await poolStatus()).transactionId + 1n}`,
    ]);
    // The engine caches the kernel's transaction id; a fresh open re-reads it, as after any restart.
    engine.close();
    engine = await open();
    const device = await engine.createVolume({ name: "vol2", sizeBytes: 16 * MiB });
    assert.notEqual(device.deviceId, free);
    const check = StateStore.open(statePath);
    assert.ok(check.listQuarantined("e2e").some((q) => q.deviceId === free));
    check.close();
  });

  it("returns a deleted volume's blocks to the pool, with and without discard", async () => {
    // vol1 was grown online, so ext4 zeroes the new groups' inode tables in the background, allocating
    // pool blocks while we count. Stop that for the measurement.
    await sh("mount", ["-o", "remount,noinit_itable", "/mnt/vol1"]);
    await sh("sync", []);
    for (const discard of [false, true]) {
      const name = `fill-${discard}`;
      const path = await engine.activate((await engine.createVolume({ name, sizeBytes: 32 * MiB })).name);
      await sh("dd", ["if=/dev/urandom", `of=${path}`, "bs=1M", "count=16", "oflag=direct"]);
      const mapped = parseThinStatus(await sh("dmsetup", ["status", `tpcsi-${name}`])).mappedSectors / 128;
      await engine.deactivate(name);
      const written = (await poolStatus()).dataUsedBlocks;
      await engine.deleteDevice(name, { discard });
      // Blocks freed in the pool's open metadata transaction count as used until its next commit
      // (dm-thin commits about once a second), so poll for a few seconds.
      let freed = 0;
      for (const deadline = Date.now() + 5000; Date.now() < deadline && freed < mapped;) {
        freed = written - (await poolStatus()).dataUsedBlocks;
        if (freed < mapped) await new Promise((r) => setTimeout(r, 250));
      }
      assert.equal(mapped, 256, "16MiB written = 256 blocks of 64KiB mapped");
      assert.ok(
        freed >= mapped,
        `all ${mapped} blocks return to the pool (discard=${discard}), got ${freed}`,
      );
      assert.equal(engine.getDevice(name), undefined);
    }
  });

  it("re-assembles the pool from its metadata and reactivates what was active, as after a reboot", async () => {
    await sh("umount", ["/mnt/vol1"]);
    engine.close();
    await removeAllDmDevices();
    engine = await open();
    assert.equal(engine.lastReconcile?.reactivated, 1, "vol1 was active");
    assert.equal(engine.getDevice("vol1")?.state, DeviceState.Active);
    assert.equal(engine.getDevice("snap1")?.state, DeviceState.Inactive);
    const ls = await sh("dmsetup", ["ls"]);
    assert.equal(ls.includes("tpcsi-snap1"), false);
    await sh("mount", ["/dev/mapper/tpcsi-vol1", "/mnt/vol1"]);
    assert.equal(await sha256File("/mnt/vol1/data"), fileSum);
    const ids = await thinIds();
    const store = StateStore.open(statePath);
    const known = [
      ...store.listDevices().map((d) => d.deviceId),
      ...store.listQuarantined("e2e").map((q) => q.deviceId),
    ].sort((a, b) => a - b);
    store.close();
    assert.deepEqual(ids, known, "every id in the pool is a device or a quarantined id, and the reverse");
  });

  it("rolls a create killed before set_transaction_id back, and one killed after it forward", async () => {
    engine.close();
    const killedEarly = await childOp("create.kernel-created", "create", "crash-early", String(16 * MiB));
    assert.equal(killedEarly.signal, "SIGKILL", killedEarly.stderr);
    const killedLate = await childOp("create.txid-advanced", "create", "crash-late", String(16 * MiB));
    assert.equal(killedLate.signal, "SIGKILL", killedLate.stderr);
    engine = await open();
    assert.equal(engine.getDevice("crash-early"), undefined, "rolled back");
    assert.equal(engine.getDevice("crash-late")?.state, DeviceState.Inactive, "rolled forward");
    const store = StateStore.open(statePath);
    const known = store.listDevices().map((d) => d.deviceId);
    const quarantined = store.listQuarantined("e2e").map((q) => q.deviceId);
    store.close();
    assert.deepEqual(
      await thinIds(),
      [...known, ...quarantined].sort((a, b) => a - b),
      "no leaked id either way",
    );
  });

  it("resumes an origin left suspended by a crash in the middle of a snapshot", async () => {
    engine.close();
    const killed = await childOp("snapshot.origin-suspended", "snapshot", "snap-crash", "vol1");
    assert.equal(killed.signal, "SIGKILL", killed.stderr);
    assert.match(
      await sh("dmsetup", ["info", "tpcsi-vol1"]),
      /SUSPENDED/,
      "the kill really left it suspended",
    );
    engine = await open();
    assert.match(await sh("dmsetup", ["info", "tpcsi-vol1"]), /State:\s+ACTIVE/);
    assert.equal(engine.lastReconcile?.resumed, 1);
    assert.equal(engine.getDevice("snap-crash"), undefined, "the half-made snapshot is rolled back");
    writeFileSync("/mnt/vol1/after-crash", "writes flow again");
    await sh("sync", []);
  });

  it("at start-up, loads the recorded size into an active device whose live table is shorter", async () => {
    await engine.createVolume({ name: "short", sizeBytes: 16 * MiB });
    await engine.activate("short");
    const table = await sh("dmsetup", ["table", "tpcsi-short"]);
    const shorter = table.trim().replace(/^0 \d+ /, `0 ${(8 * MiB) / 512} `);
    await sh("dmsetup", ["reload", "tpcsi-short", "--table", shorter]);
    await sh("dmsetup", ["resume", "tpcsi-short"]);
    assert.equal(await sh("blockdev", ["--getsize64", "/dev/mapper/tpcsi-short"]), String(8 * MiB));
    engine.close();
    engine = await open();
    assert.equal(await sh("blockdev", ["--getsize64", "/dev/mapper/tpcsi-short"]), String(16 * MiB));
    assert.equal(engine.getDevice("short")?.state, DeviceState.Active);
  });

  it("keeps spare thin ids made ahead; a create takes one with no kernel change; start-up keeps them", async () => {
    engine.close();
    engine = await open(4);
    const ready = () => withStore((store) => store.listSpareIds("e2e").filter((x) => x.ready));
    for (const deadline = Date.now() + 60_000; ready().length < 4; await sleep(100))
      assert.ok(Date.now() < deadline, "4 spares made in the background");
    const spares = ready().map((x) => x.deviceId);
    const ids = await thinIds();
    for (const id of spares) assert.ok(ids.includes(id), `spare ${id} exists in the pool's metadata`);
    const txid = (await poolStatus()).transactionId;

    const volume = await engine.createVolume({ name: "from-spare", sizeBytes: 24 * MiB });
    assert.ok(spares.includes(volume.deviceId), "the volume is one of the spares");
    assert.equal((await poolStatus()).transactionId, txid, "the pool was not messaged for it");
    await engine.activate("from-spare");
    assert.equal(await sh("blockdev", ["--getsize64", "/dev/mapper/tpcsi-from-spare"]), String(24 * MiB));
    const nonZero = await sh("sh", [
      "-c",
      "head -c 4194304 /dev/mapper/tpcsi-from-spare | tr -d '\\0' | wc -c",
    ]);
    assert.equal(nonZero.trim(), "0", "a spare reads as zeros: never written");
    await sh("mkfs.ext4", ["-q", "/dev/mapper/tpcsi-from-spare"]);
    for (const deadline = Date.now() + 60_000; ready().length < 4; await sleep(100))
      assert.ok(Date.now() < deadline, "the spare taken is made again");

    // Stopped, then started without spares: ready ones are kept; a ready row whose id the pool lacks (as
    // after a metadata restore) is forgotten, not reported as a device.
    engine.close();
    withStore((store) => {
      store.addSpareId("e2e", 4000);
      store.markSpareReady("e2e", 4000);
    });
    engine = await open();
    const kept = withStore((store) => store.listSpareIds("e2e"));
    assert.equal(kept.length, 4);
    assert.ok(kept.every((x) => x.ready && x.deviceId !== 4000));
    assert.equal(engine.lastReconcile?.faulty, 0);
    const known = withStore((store) => [
      ...store.listDevices().map((d) => d.deviceId),
      ...store.listQuarantined("e2e").map((q) => q.deviceId),
      ...store.listSpareIds("e2e").map((x) => x.deviceId),
    ]).sort((a, b) => a - b);
    assert.deepEqual(await thinIds(), known, "every id in the pool is a device, a quarantined id or a spare");
  });

  it("after a reboot, brings the active devices back in one dmsetup process; one it cannot make is faulty, the rest come up", async () => {
    const names = ["batch-a", "batch-b", "batch-c", "batch-d"];
    for (const name of names) {
      await engine.createVolume({ name, sizeBytes: 16 * MiB });
      await engine.activate(name);
    }
    await sh("sh", ["-c", "head -c 1048576 /dev/urandom > /tmp/batch-d.bin"]);
    await sh("dd", ["if=/tmp/batch-d.bin", "of=/dev/mapper/tpcsi-batch-d", "oflag=direct", "status=none"]);
    const lost = engine.getDevice("batch-b")?.deviceId;
    engine.close();
    await sh("umount", ["/mnt/vol1"]);
    // The pool loses batch-b's thin id (as a metadata repair might): the kernel refuses its table.
    await sh("dmsetup", ["remove", "tpcsi-batch-b"]);
    await sh("dmsetup", ["message", "thinpool-csi-e2e", "0", `delete ${lost}`]);
    await removeAllDmDevices();
    const creates: string[][] = [];
    const kernelRunner = new ExecaRunner();
    engine = await open(0, {
      run: (file, args, options) => {
        if (args[0] === "create") creates.push([...args]);
        return kernelRunner.run(file, args, options);
      },
    });
    const batch = creates.findIndex((args) => args[1] === "--concise");
    assert.equal(creates.filter((args) => args[1] === "--concise").length, 1, "one process for every device");
    const oneByOne = creates.slice(batch + 1).map((args) => args[1]);
    assert.equal(oneByOne[0], "tpcsi-batch-b", "after the batch stopped at batch-b, one by one from it");
    assert.ok(
      oneByOne.includes("tpcsi-batch-c") && !oneByOne.includes("tpcsi-batch-a"),
      "batch-a was made by the batch",
    );
    const faulty = engine.getDevice("batch-b");
    assert.equal(faulty?.state, DeviceState.Faulty);
    assert.match(faulty?.lastError ?? "", /could not be reactivated/);
    const ls = await sh("dmsetup", ["ls"]);
    for (const name of ["batch-a", "batch-c", "batch-d", "vol1", "from-spare"]) {
      assert.equal(engine.getDevice(name)?.state, DeviceState.Active, name);
      assert.ok(ls.includes(`tpcsi-${name}`), `${name} is live`);
    }
    assert.equal(ls.includes("tpcsi-batch-b"), false);
    const readBack = await sh("sh", [
      "-c",
      "head -c 1048576 /dev/mapper/tpcsi-batch-d | cmp - /tmp/batch-d.bin && echo same",
    ]);
    assert.equal(readBack.trim(), "same", "batch-d, made after the failure, holds its data");
  });

  it("at start-up, cancels a deferred removal pending on a mounted device it records as active", async () => {
    mkdirSync("/mnt/spare", { recursive: true });
    await sh("mount", ["/dev/mapper/tpcsi-from-spare", "/mnt/spare"]);
    engine.close();
    await sh("dmsetup", ["remove", "--deferred", "tpcsi-from-spare"]);
    assert.match(await sh("dmsetup", ["info", "tpcsi-from-spare"]), /DEFERRED REMOVE/);
    engine = await open();
    assert.doesNotMatch(await sh("dmsetup", ["info", "tpcsi-from-spare"]), /DEFERRED REMOVE/);
    await sh("umount", ["/mnt/spare"]);
    assert.ok((await sh("dmsetup", ["ls"])).includes("tpcsi-from-spare"), "still there after its last close");
    assert.equal(engine.getDevice("from-spare")?.state, DeviceState.Active);
  });
});
