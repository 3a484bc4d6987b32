/**
 * Full pools against the real kernel (runs inside the VM), through the real driver over its socket.
 * Pools are small dm-linear carvings of the suite disks, so they fill in seconds and can be grown by
 * reloading the linear table (a second extent, as when a disk or LV is extended).
 *
 *   data space      128 MiB pool: refusal by the over-provisioning ratio and by the 10 % data reserve while
 *                   the pool still has room; a writer past the end gets ENOSPC at once (error_if_no_space)
 *                   and the pool reports out_of_data_space; synced data intact; DeleteVolume brings the
 *                   pool back to write mode at once; filled again, growing the data device brings it back
 *                   with no call at all (the driver reloads the pool for its grown device).
 *   metadata space  512 KiB metadata: snapshots of a fully written volume, each followed by writes that
 *                   break sharing, until the 10 % metadata reserve refuses them while the pool is still rw;
 *                   writes needing new mappings (in small transactions) then run it out: the kernel stops
 *                   cleanly at its own reserve (read-only, no needs_check); a driver restarted then still
 *                   starts; growing the metadata device brings the pool back with no call.
 *   passed anyway   384 KiB metadata, the driver's floor lowered to 1 % and one fsync per round of writes:
 *                   a metadata transaction outgrows the kernel's reserve, the metadata operation fails, the
 *                   pool goes read-only with needs_check, Probe turns not ready, and only the offline repair
 *                   (driver stopped, pool removed, thin_check, flag cleared) brings it back.
 *
 * Figures are printed as "[full-pool] {...}" lines and gathered in docs/RELIABILITY.md (Full pools).
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import { execa } from "execa";
import { StateStore } from "../../../src/state/store.js";
import { vmResultDir } from "../../support/e2e-env.js";
import {
  directSha,
  KiB,
  linear,
  MiB,
  poolStatus,
  stridedWrite,
  waitFor,
  writeRandom,
  zeroRange,
} from "../support/full-pool.js";
import { startTestDriver, type TestDriver } from "../support/driver.js";
import { E2E_DATA_DEV, E2E_META_DEV, env, removeAllDmDevices, sh } from "../support/vm-env.js";

const blockCap = { access_mode: { mode: "SINGLE_NODE_WRITER" as const }, block: {} };
const mountCap = {
  access_mode: { mode: "SINGLE_NODE_WRITER" as const },
  mount: { fs_type: "ext4", mount_flags: [] },
};
const BLOCK = 64 * KiB;
const devOf = (id: string): string => `/dev/mapper/tpcsi-${id.split("@")[0]}`;

const figures: Record<string, unknown> = {};
function figure(key: string, value: unknown): void {
  figures[key] = value;
  console.log(`      [full-pool] ${JSON.stringify({ [key]: value })}`);
}

async function refusal(promise: Promise<unknown>, code: status, pattern: RegExp): Promise<string> {
  let details = "";
  await assert.rejects(promise, (err: ServiceError) => {
    assert.equal(err.code, code, `expected ${status[code]}, got ${status[err.code]}: ${err.details}`);
    assert.match(err.details, pattern);
    details = err.details;
    return true;
  });
  return details;
}

/** Volume helpers over one driver: create, stage (block or ext4), unstage, read the condition. */
function volumes(d: TestDriver) {
  const stagePath = (id: string) =>
    join(d.kubelet, "plugins/kubernetes.io/csi/thinpool.csi.dev", id.slice(0, 26), "globalmount");
  return {
    stagePath,
    async create(name: string, bytes: number, fs = false): Promise<string> {
      const res = await d.csi.controller("CreateVolume", {
        name,
        capacity_range: { required_bytes: bytes },
        volume_capabilities: [fs ? mountCap : blockCap],
      });
      return res.volume?.volume_id ?? "";
    },
    async stage(id: string, fs = false): Promise<string> {
      await d.csi.node("NodeStageVolume", {
        volume_id: id,
        staging_target_path: stagePath(id),
        volume_capability: fs ? mountCap : blockCap,
      });
      return fs ? stagePath(id) : devOf(id);
    },
    async unstage(id: string): Promise<void> {
      await d.csi.node("NodeUnstageVolume", { volume_id: id, staging_target_path: stagePath(id) });
    },
    async condition(id: string): Promise<{ abnormal: boolean; message: string }> {
      const res = await d.csi.controller("ControllerGetVolume", { volume_id: id });
      return {
        abnormal: res.status?.volume_condition?.abnormal ?? false,
        message: res.status?.volume_condition?.message ?? "",
      };
    },
    async capacity(): Promise<number> {
      return Number((await d.csi.controller("GetCapacity", {})).available_capacity);
    },
    async ready(): Promise<boolean> {
      return (await d.csi.identity("Probe", {})).ready?.value ?? false;
    },
  };
}

async function dropCaches(): Promise<void> {
  await sh("sync", []);
  writeFileSync("/proc/sys/vm/drop_caches", "3");
}

describe("full pools: data and metadata space on the real kernel", function () {
  this.timeout(300_000);
  const linears: string[] = [];
  let current: TestDriver | undefined;

  before(async () => {
    await removeAllDmDevices();
  });

  /** Stops the phase's driver and removes its thin devices and pool (the linear devices stay until the end). */
  async function teardown(): Promise<void> {
    await current?.stop().catch(() => undefined);
    current = undefined;
    const names = (await sh("dmsetup", ["ls"]))
      .split("\n")
      .map((l) => l.split(/\s+/)[0] ?? "")
      .filter((n) => n && n !== "No");
    for (const n of names.filter((x) => x.startsWith("tpcsi-")))
      await sh("umount", ["-l", `/dev/mapper/${n}`]).catch(() => undefined);
    for (const prefix of ["tpcsi-", "thinpool-csi-"])
      for (const n of names.filter((x) => x.startsWith(prefix))) await sh("dmsetup", ["remove", n]);
  }

  after(async () => {
    await teardown();
    for (const n of linears) await sh("dmsetup", ["remove", n]).catch(() => undefined);
    const dir = vmResultDir();
    if (dir) writeFileSync(join(dir, "full-pool.json"), JSON.stringify(figures, null, 2));
  });

  async function carve(name: string, segments: Parameters<typeof linear>[1]): Promise<string> {
    if (!linears.includes(name)) linears.push(name);
    return linear(name, segments);
  }

  describe("data space (128 MiB pool, 64 KiB blocks, ratio 10, 10 % reserve)", () => {
    const POOL = "thinpool-csi-fpd";
    const dataExtent = { device: E2E_DATA_DEV, offsetBytes: 0, bytes: 128 * MiB };
    let d: TestDriver;
    let v: ReturnType<typeof volumes>;
    let keep = "";
    let raw = "";
    let spare = "";
    let keepSum = "";
    let rawSum = "";
    let rawEnd = 0; // bytes of `raw` written so far (sequentially from 0)

    before(async () => {
      await zeroRange(E2E_META_DEV, 0, 64 * KiB);
      const data = await carve("fp-data", [dataExtent]);
      const meta = await carve("fp-meta", [{ device: E2E_META_DEV, offsetBytes: 0, bytes: 4 * MiB }]);
      d = current = await startTestDriver({ pool: "fpd", data, metadata: meta });
      v = volumes(d);
    });

    after(teardown);

    const checkSynced = async (): Promise<void> => {
      await dropCaches();
      assert.equal(await directSha(devOf(raw), 16 * MiB), rawSum, "raw volume: synced 16 MiB intact");
      assert.equal(
        (await sh("sha256sum", [join(v.stagePath(keep), "synced.bin")])).split(" ")[0],
        keepSum,
        "ext4 volume: synced file intact",
      );
    };

    it("refuses a volume past the over-provisioning ratio, with the numbers", async () => {
      assert.equal(await v.ready(), true);
      assert.equal(await v.capacity(), 1280 * MiB, "10 x 128 MiB");
      keep = await v.create("keep", 64 * MiB, true);
      const mnt = await v.stage(keep, true);
      await sh("dd", [
        "if=/dev/urandom",
        `of=${mnt}/synced.bin`,
        "bs=1M",
        "count=8",
        "conv=fsync",
        "status=none",
      ]);
      keepSum = (await sh("sha256sum", [`${mnt}/synced.bin`])).split(" ")[0] as string;
      raw = await v.create("raw", 512 * MiB);
      rawSum = await writeRandom(await v.stage(raw), 16 * MiB);
      rawEnd = 16 * MiB;
      spare = await v.create("spare", 64 * MiB);
      await writeRandom(await v.stage(spare), 32 * MiB);
      await v.unstage(spare);

      const message = await refusal(
        v.create("too-big", 640 * MiB + BLOCK),
        status.RESOURCE_EXHAUSTED,
        /would exceed the over-provisioning limit: 640MiB of 1\.25GiB \(10x 128MiB\) already provisioned, 640MiB left/,
      );
      figure("dataRatioRefusal", message);
      const exact = await v.create("exactly-at-limit", 640 * MiB);
      assert.equal(await v.capacity(), 0, "the limit is reached exactly");
      await d.csi.controller("DeleteVolume", { volume_id: exact });
    });

    it("refuses new volumes and snapshots under the 10 % data reserve while the pool still has room", async () => {
      const before = await poolStatus(POOL);
      const reserve = before.dataTotalBlocks / 10;
      // Leave half the reserve free: under the floor, still far from full.
      const blocks = before.dataTotalBlocks - before.dataUsedBlocks - Math.floor(reserve / 2);
      await sh("dd", [
        "if=/dev/urandom",
        `of=${devOf(raw)}`,
        `bs=${BLOCK}`,
        `seek=${rawEnd / BLOCK}`,
        `count=${blocks}`,
        "oflag=direct",
        "status=none",
      ]);
      rawEnd += blocks * BLOCK;
      // The engine caches the pool status for up to 1 s.
      await waitFor("GetCapacity to drop to 0", async () => ((await v.capacity()) === 0 ? true : undefined));
      const st = await poolStatus(POOL);
      assert.equal(st.mode, "rw", "not full yet");
      const free = st.dataTotalBlocks - st.dataUsedBlocks;
      assert.ok(free > 0 && free <= reserve, `free ${free} blocks is under the reserve of ${reserve}`);
      const volumeRefusal = await refusal(
        v.create("one-more", 16 * MiB),
        status.RESOURCE_EXHAUSTED,
        /free data space .* is at or below the reserve of 12\.80MiB \(10%\)/,
      );
      const snapshotRefusal = await refusal(
        d.csi.controller("CreateSnapshot", { name: "snap-keep", source_volume_id: keep }),
        status.RESOURCE_EXHAUSTED,
        /free data space .* reserve/,
      );
      figure("dataFloor", {
        totalBlocks: st.dataTotalBlocks,
        usedBlocks: st.dataUsedBlocks,
        freeBlocks: free,
        volumeRefusal,
        snapshotRefusal,
      });
    });

    it("a writer past the end gets ENOSPC at once, the pool reports out_of_data_space, synced data is intact", async () => {
      const direct = await execa(
        "dd",
        [
          "if=/dev/zero",
          `of=${devOf(raw)}`,
          `bs=${BLOCK}`,
          `seek=${rawEnd / BLOCK}`,
          "count=1024",
          "oflag=direct",
        ],
        { env, reject: false },
      );
      assert.notEqual(direct.exitCode, 0);
      assert.match(direct.stderr, /No space left on device/);
      const fsWriter = await execa(
        "dd",
        ["if=/dev/zero", `of=${v.stagePath(keep)}/more.bin`, "bs=1M", "count=32", "conv=fsync"],
        { env, reject: false },
      );
      assert.notEqual(fsWriter.exitCode, 0, "the ext4 writer gets an error too");
      const st = await poolStatus(POOL);
      assert.equal(st.mode, "out_of_data_space");
      assert.equal(st.noSpaceMode, "error_if_no_space");
      assert.equal(st.dataUsedBlocks, st.dataTotalBlocks);
      const condition = await waitFor("abnormal condition", async () => {
        const c = await v.condition(keep);
        return c.abnormal ? c : undefined;
      });
      assert.match(condition.message, /out of data space/);
      const stats = await d.csi.node("NodeGetVolumeStats", {
        volume_id: keep,
        volume_path: v.stagePath(keep),
      });
      assert.equal(stats.volume_condition?.abnormal, true);
      await refusal(v.create("one-more", 16 * MiB), status.RESOURCE_EXHAUSTED, /out of data space/);
      const probeReady = await v.ready();
      await checkSynced();
      const dmesg = (await sh("dmesg", [])).split("\n").filter((l) => /thin|EXT4-fs|I\/O error/.test(l));
      figure("dataFull", {
        rawWriter: direct.stderr.trim().split("\n"),
        ext4Writer: fsWriter.stderr.trim().split("\n"),
        status: `${st.dataUsedBlocks}/${st.dataTotalBlocks} ${st.mode}`,
        condition: condition.message,
        probeReady,
        kernel: dmesg.slice(-8),
      });
    });

    it("DeleteVolume frees space: the pool is back in write mode, new volumes and writes work", async () => {
      await d.csi.controller("DeleteVolume", { volume_id: spare });
      const st = await waitFor("write mode after the delete", async () => {
        const s = await poolStatus(POOL);
        return s.mode === "rw" ? s : undefined;
      });
      figure("dataAfterDelete", `${st.dataUsedBlocks}/${st.dataTotalBlocks} ${st.mode}`);
      const fresh = await waitFor("a new volume to be accepted", async () =>
        v.create("after-delete", 16 * MiB).catch((err: ServiceError) => {
          if (err.code !== status.RESOURCE_EXHAUSTED) throw err;
          return undefined;
        }),
      );
      await writeRandom(await v.stage(fresh), 4 * MiB);
      await writeRandom(devOf(raw), 4 * MiB, 200 * MiB);
      assert.equal((await poolStatus(POOL)).mode, "rw");
      await checkSynced();
    });

    it("filled again, a grown data device brings the pool back by itself: no call, no restart", async () => {
      const refill = await execa(
        "dd",
        ["if=/dev/zero", `of=${devOf(raw)}`, "bs=1M", `seek=${256}`, "count=128", "oflag=direct"],
        { env, reject: false },
      );
      assert.match(refill.stderr, /No space left on device/);
      assert.equal((await poolStatus(POOL)).mode, "out_of_data_space");
      // The operator extends the data device (here a second extent at the end of the disk).
      await carve("fp-data", [
        dataExtent,
        { device: E2E_DATA_DEV, offsetBytes: 1920 * MiB, bytes: 128 * MiB },
      ]);
      const st = await waitFor("the driver to adopt the grown data device", async () => {
        const s = await poolStatus(POOL);
        return s.dataTotalBlocks === 4096 && s.mode === "rw" ? s : undefined;
      });
      assert.equal(await v.ready(), true);
      assert.ok((await v.capacity()) > 0);
      await writeRandom(devOf(raw), 32 * MiB, 300 * MiB);
      assert.equal((await poolStatus(POOL)).mode, "rw");
      assert.equal((await v.condition(keep)).abnormal, false);
      await checkSynced();
      figure("dataAfterGrow", `${st.dataUsedBlocks}/${st.dataTotalBlocks} ${st.mode}`);
    });

    it("the ext4 volume that got write errors mounts again and keeps its synced file", async () => {
      await v.unstage(keep);
      await d.driver.engine.engine?.activate(keep.split("@")[0] as string);
      const fsck = await execa("e2fsck", ["-fn", devOf(keep)], { env, reject: false });
      await v.stage(keep, true);
      await checkSynced();
      figure("dataExt4AfterRestage", {
        e2fsckExit: fsck.exitCode,
        e2fsck: fsck.stdout.split("\n").slice(-4),
        kernel: (await sh("dmesg", []))
          .split("\n")
          .filter((l) => /EXT4-fs (error|.*journal|.*read-only)/.test(l)),
      });
    });
  });

  /**
   * Snapshot `origin`, then write 4 KiB every MiB of its first `count` MiB, breaking sharing with the
   * snapshot in every leaf they touch, with an fsync every `fsyncEvery` writes (each fsync ends a dm-thin
   * metadata transaction).
   */
  async function snapshotRound(
    d: TestDriver,
    origin: string,
    i: number,
    fsyncEvery: number,
    count: number,
  ): Promise<{ snapshot?: string; refused?: string; write?: Awaited<ReturnType<typeof stridedWrite>> }> {
    let snapshot: string;
    try {
      const res = await d.csi.controller("CreateSnapshot", {
        name: `${origin.slice(0, 8)}-round-${i}`,
        source_volume_id: origin,
      });
      snapshot = res.snapshot?.snapshot_id ?? "";
    } catch (err) {
      const e = err as ServiceError;
      if (e.code !== status.RESOURCE_EXHAUSTED) throw err;
      return { refused: e.details };
    }
    const write = await stridedWrite(devOf(origin), { stride: MiB, count, sync: "fsync", fsyncEvery });
    return { snapshot, write };
  }

  describe("metadata space (512 KiB metadata, 512 MiB data)", () => {
    const POOL = "thinpool-csi-fpm";
    const metaExtent = { device: E2E_META_DEV, offsetBytes: 8 * MiB, bytes: 512 * KiB };
    let d: TestDriver;
    let v: ReturnType<typeof volumes>;
    let origin = "";
    let keep = "";
    let sparse = "";
    let keepSum = "";
    const snapshots: string[] = [];
    let failedDelete = "";

    before(async () => {
      await zeroRange(E2E_META_DEV, metaExtent.offsetBytes, 64 * KiB);
      const data = await carve("fp-mdata", [
        { device: E2E_DATA_DEV, offsetBytes: 256 * MiB, bytes: 512 * MiB },
      ]);
      const meta = await carve("fp-mmeta", [metaExtent]);
      d = current = await startTestDriver({ pool: "fpm", data, metadata: meta });
      v = volumes(d);
    });

    after(teardown);

    it("refuses snapshots and volumes under the 10 % metadata reserve while the pool is still rw", async () => {
      const fresh = await poolStatus(POOL);
      origin = await v.create("m-origin", 128 * MiB);
      await writeRandom(await v.stage(origin), 128 * MiB);
      keep = await v.create("m-keep", 16 * MiB);
      keepSum = await writeRandom(await v.stage(keep), 8 * MiB);
      sparse = await v.create("m-sparse", 1024 * MiB);
      await v.stage(sparse);
      const usedPerRound: number[] = [];
      let refused = "";
      for (let i = 1; i <= 40 && !refused; i++) {
        // Half the origin per round: one round then costs about 6 metadata blocks, well under the 12.8-block
        // reserve, so the floor is what stops the rounds. (Writing all 128 MiB cost about 12 blocks a round,
        // as much as the reserve: a round could start above the floor and still exhaust the pool, which is
        // what the next test does on purpose.)
        const round = await snapshotRound(d, origin, i, 16, 64);
        if (round.refused) refused = round.refused;
        else {
          assert.equal(round.write?.error, undefined, `round ${i} writes succeed`);
          snapshots.push(round.snapshot as string);
          usedPerRound.push((await poolStatus(POOL)).metadataUsedBlocks);
        }
      }
      assert.match(refused, /free metadata space .* is at or below the reserve of 51\.20KiB \(10%\)/);
      const st = await poolStatus(POOL);
      assert.equal(st.mode, "rw", "refused before the pool ran out");
      assert.ok(st.metadataUsedBlocks < st.metadataTotalBlocks);
      assert.ok(snapshots.length >= 3, `${snapshots.length} snapshots were allowed`);
      const volumeRefusal = await refusal(
        v.create("one-more", 16 * MiB),
        status.RESOURCE_EXHAUSTED,
        /free metadata space/,
      );
      assert.equal(await v.capacity(), 0);
      figure("metadataFloor", {
        fresh: `${fresh.metadataUsedBlocks}/${fresh.metadataTotalBlocks}`,
        snapshotsAllowed: snapshots.length,
        usedAfterEachRound: usedPerRound,
        atRefusal: `${st.metadataUsedBlocks}/${st.metadataTotalBlocks} ${st.mode}`,
        snapshotRefusal: refused,
        volumeRefusal,
      });
    });

    it("writes needing new mappings past the end get EIO; the pool goes read-only cleanly; synced data intact", async () => {
      // One 4 KiB write per 64 KiB block of an over-provisioned volume, each needing a new mapping, with an
      // fsync every 32 writes: every metadata transaction stays small next to the kernel's own reserve.
      const fill = await stridedWrite(devOf(sparse), {
        stride: BLOCK,
        count: 16384,
        sync: "fsync",
        fsyncEvery: 32,
      });
      assert.equal(fill.error, "EIO", `the writer sees EIO (got ${fill.error ?? "no error"})`);
      const st = await poolStatus(POOL);
      assert.equal(st.mode, "ro");
      assert.equal(st.needsCheck, false, "stopped at the kernel's own reserve: no needs_check");
      // A block the volume already owns alone can still be overwritten; reads work.
      const overwrite = await stridedWrite(devOf(origin), { stride: MiB, count: 4, sync: "dsync" });
      assert.equal(overwrite.error, undefined);
      assert.equal(await directSha(devOf(keep), 8 * MiB), keepSum);
      const condition = await waitFor("abnormal condition", async () => {
        const c = await v.condition(keep);
        return c.abnormal ? c : undefined;
      });
      assert.match(condition.message, /read-only/);
      await refusal(v.create("one-more", 16 * MiB), status.RESOURCE_EXHAUSTED, /read-only/);
      failedDelete = snapshots.shift() as string;
      const deleteError = await d.csi.controller("DeleteSnapshot", { snapshot_id: failedDelete }).then(
        () => "accepted",
        (err: ServiceError) => `${status[err.code]}: ${err.details}`,
      );
      assert.match(deleteError, /^UNAVAILABLE: .*Operation not supported/, "dm-thin refuses messages now");
      figure("metadataFull", {
        writesBeforeError: fill.written,
        writerError: `${fill.error} at ${fill.failedAt}`,
        status: `${st.metadataUsedBlocks}/${st.metadataTotalBlocks} ${st.mode} needs_check=${st.needsCheck}`,
        condition: condition.message,
        probeReady: await v.ready(),
        deleteSnapshot: deleteError,
        kernel: (await sh("dmesg", []))
          .split("\n")
          .filter((l) => /thin/.test(l))
          .slice(-3),
      });
    });

    it("a driver restarted while the pool is read-only starts, answers, and unstages and restages", async () => {
      await d.stop();
      d = current = await startTestDriver({
        pool: "fpm",
        data: "/dev/mapper/fp-mdata",
        metadata: "/dev/mapper/fp-mmeta",
        restartOf: d,
      });
      v = volumes(d);
      const probe = await d.csi.identity("Probe", {});
      const engine = d.driver.engine.engine;
      assert.ok(engine, `the engine started (Probe: ${JSON.stringify(probe)})`);
      assert.equal(engine.lastReconcile?.faulty, 0, "nothing marked faulty");
      assert.equal((await v.condition(keep)).abnormal, true);
      await v.unstage(keep);
      await v.stage(keep);
      assert.equal(await directSha(devOf(keep), 8 * MiB), keepSum);
      figure("metadataRestartWhileReadOnly", {
        probeReady: probe.ready?.value,
        reconcile: engine.lastReconcile,
      });
    });

    it("a grown metadata device brings the pool back by itself; deletes, creates and writes work", async () => {
      await carve("fp-mmeta", [
        metaExtent,
        { device: E2E_META_DEV, offsetBytes: 16 * MiB, bytes: 256 * KiB },
      ]);
      const st = await waitFor("the driver to adopt the grown metadata device", async () => {
        const s = await poolStatus(POOL);
        return s.metadataTotalBlocks === 192 && s.mode === "rw" ? s : undefined;
      });
      await d.csi.controller("DeleteSnapshot", { snapshot_id: failedDelete });
      for (const id of snapshots.splice(0, 3)) await d.csi.controller("DeleteSnapshot", { snapshot_id: id });
      const fresh = await v.create("after-grow", 16 * MiB);
      await writeRandom(await v.stage(fresh), 4 * MiB);
      const more = await stridedWrite(devOf(sparse), {
        start: 900 * MiB,
        stride: BLOCK,
        count: 64,
        sync: "dsync",
      });
      assert.equal(more.error, undefined);
      assert.equal(await directSha(devOf(keep), 8 * MiB), keepSum);
      const after = await poolStatus(POOL);
      assert.equal(after.mode, "rw");
      figure("metadataAfterGrow", {
        adopted: `${st.metadataUsedBlocks}/${st.metadataTotalBlocks} ${st.mode}`,
        afterDeletesAndWrites: `${after.metadataUsedBlocks}/${after.metadataTotalBlocks} ${after.mode}`,
      });
    });
  });

  describe("metadata space passed anyway (384 KiB metadata, floor lowered to 1 %, one fsync per round)", () => {
    const POOL = "thinpool-csi-fpb";
    const metaExtent = { device: E2E_META_DEV, offsetBytes: 24 * MiB, bytes: 384 * KiB };
    const grownMeta = [metaExtent, { device: E2E_META_DEV, offsetBytes: 32 * MiB, bytes: 512 * KiB }];
    let d: TestDriver;
    let v: ReturnType<typeof volumes>;
    let origin = "";
    let keep = "";
    let keepSum = "";
    let data = "";
    let meta = "";
    const snapshots: string[] = [];

    before(async () => {
      await zeroRange(E2E_META_DEV, metaExtent.offsetBytes, 64 * KiB);
      data = await carve("fp-bdata", [{ device: E2E_DATA_DEV, offsetBytes: 768 * MiB, bytes: 512 * MiB }]);
      meta = await carve("fp-bmeta", [metaExtent]);
      d = current = await startTestDriver({
        pool: "fpb",
        data,
        metadata: meta,
        extraArgs: ["--reserved-metadata-percent", "1"],
      });
      v = volumes(d);
    });

    after(teardown);

    it("one burst of writes outgrows the kernel's reserve: a metadata operation fails, read-only with needs_check, Probe not ready", async () => {
      origin = await v.create("b-origin", 128 * MiB);
      await writeRandom(await v.stage(origin), 128 * MiB);
      keep = await v.create("b-keep", 16 * MiB);
      keepSum = await writeRandom(await v.stage(keep), 8 * MiB);
      let failure: Awaited<ReturnType<typeof stridedWrite>> | undefined;
      for (let i = 1; i <= 30 && !failure; i++) {
        const round = await snapshotRound(d, origin, i, 128, 128);
        assert.equal(round.refused, undefined, `round ${i}: the 1 % floor does not stop it`);
        snapshots.push(round.snapshot as string);
        if (round.write?.error) failure = round.write;
      }
      assert.ok(failure, "the pool ran out of metadata");
      const st = await poolStatus(POOL);
      assert.equal(st.mode, "ro");
      assert.equal(st.needsCheck, true, "the failed commit aborted the transaction and set needs_check");
      const reason = await waitFor("Probe to turn not ready", async () => {
        const probe = await d.csi.identity("Probe", {});
        return probe.ready?.value === false ? "not ready" : undefined;
      });
      const condition = await v.condition(keep);
      assert.equal(condition.abnormal, true);
      assert.match(condition.message, /needs a metadata check/);
      await refusal(v.create("one-more", 16 * MiB), status.RESOURCE_EXHAUSTED, /needs a metadata check/);
      assert.equal(await directSha(devOf(keep), 8 * MiB), keepSum, "synced data readable and intact");
      // Growing the metadata device does not help now: the driver leaves the pool alone, and the kernel
      // itself refuses to grow it until repaired (a resume by hand shows it).
      await carve("fp-bmeta", grownMeta);
      await d.driver.engine.engine?.adoptGrownDevices();
      await sh("dmsetup", ["suspend", POOL]);
      await sh("dmsetup", ["resume", POOL]);
      const still = await poolStatus(POOL);
      assert.equal(still.metadataTotalBlocks, st.metadataTotalBlocks);
      assert.equal(still.mode, "ro");
      figure("metadataPassed", {
        snapshotsTaken: snapshots.length,
        writer: `${failure.error} at ${failure.failedAt} after ${failure.written} writes`,
        status: `${st.metadataUsedBlocks}/${st.metadataTotalBlocks} ${st.mode} needs_check=${st.needsCheck}`,
        probe: reason,
        condition: condition.message,
        kernel: (await sh("dmesg", []))
          .split("\n")
          .filter((l) => /thin|space map/.test(l))
          .slice(-6),
      });
    });

    it("offline repair: stop, remove the pool, thin_check, clear needs_check, start: pool rw with the grown metadata", async () => {
      // A driver restarted now still starts (not ready, saying why) and can unstage for kubelet.
      await d.stop();
      d = current = await startTestDriver({ pool: "fpb", data, metadata: meta, restartOf: d });
      v = volumes(d);
      assert.ok(d.driver.engine.engine, "the engine started on the read-only pool");
      assert.equal(await v.ready(), false);
      for (const id of [origin, keep]) await v.unstage(id);
      await d.stop();
      current = undefined;
      await sh("dmsetup", ["remove", POOL]);
      const check = await execa("thin_check", [meta], { env, reject: false });
      assert.equal(check.exitCode, 0, `thin_check: ${check.stderr}`);
      const ids = (await sh("thin_ls", ["--no-headers", "--format", "DEV", meta]))
        .split("\n")
        .map((s) => Number(s.trim()))
        .filter((n) => !Number.isNaN(n))
        .sort((a, b) => a - b);
      const store = StateStore.open(join(d.stateDir, "state.db"));
      const known = [
        ...store.listDevices({ pool: "fpb" }).map((x) => x.deviceId),
        ...store.listSpareIds("fpb").map((x) => x.deviceId),
      ].sort((a, b) => a - b);
      store.close();
      assert.deepEqual(
        ids,
        known,
        "the committed metadata holds exactly the devices and spare ids the store knows",
      );
      await sh("thin_check", ["--clear-needs-check-flag", meta]);

      d = current = await startTestDriver({ pool: "fpb", data, metadata: meta, restartOf: d });
      v = volumes(d);
      const st = await poolStatus(POOL);
      assert.equal(st.mode, "rw");
      assert.equal(st.needsCheck, false);
      assert.equal(st.metadataTotalBlocks, 224, "the grown metadata device is used at assembly");
      assert.equal(await v.ready(), true);
      assert.equal(d.driver.engine.engine?.lastReconcile?.faulty, 0);
      await v.stage(keep);
      assert.equal(await directSha(devOf(keep), 8 * MiB), keepSum);
      for (const id of snapshots.splice(0, 4)) await d.csi.controller("DeleteSnapshot", { snapshot_id: id });
      const fresh = await v.create("after-repair", 16 * MiB);
      await writeRandom(await v.stage(fresh), 4 * MiB);
      const after = await poolStatus(POOL);
      assert.equal(after.mode, "rw");
      figure("metadataRepaired", {
        thinCheck: check.stderr.trim().split("\n").concat(check.stdout.trim().split("\n")).filter(Boolean),
        thinIds: ids.length,
        afterStart: `${st.metadataUsedBlocks}/${st.metadataTotalBlocks} ${st.mode}`,
        afterDeletesAndWrites: `${after.metadataUsedBlocks}/${after.metadataTotalBlocks} ${after.mode}`,
      });
    });
  });
});
