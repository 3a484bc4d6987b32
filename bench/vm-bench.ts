/**
 * The benchmark itself, run inside the VM against the real kernel (bench/run.ts boots the VM). Every
 * comparison is measured in this one run, so the ratios cancel the machine's (emulated) speed:
 * the driver over its gRPC socket, the same dmsetup commands by hand (bench/shell-loop.ts), and LVM's
 * lvcreate on an LVM thin pool built on the same disks afterwards. Results go to
 * $THINPOOL_VM_RESULT_DIR/results.json; progress lines to stdout.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { StateStore } from "../src/state/store.js";
import { DeviceState } from "../src/state/types.js";
import { ExecaRunner } from "../src/thinpool/command.js";
import { ThinPoolEngine } from "../src/thinpool/engine.js";
import { parsePoolStatus } from "../src/thinpool/status.js";
import { removeAllDmDevices, zeroHead } from "../test/e2e/support/vm-env.js";
import { findOnPath } from "../test/support/executables.js";
import { BenchDriver, type DriverSetup } from "./driver-control.js";
import { createStream } from "./create-stream.js";
import { KernelFreezeProbe } from "./kernel-freeze.js";
import type { CommandTiming, DriverStats } from "./driver-protocol.js";
import type { BenchResults, BenchSizes, CallCounts, FreezeParts } from "./results.js";
import { run, timedShellLoop, type Argv, type Iteration } from "./shell-loop.js";
import { summarize, timed, type Summary } from "./stats.js";

const MiB = 1024 * 1024;
const POOL_DM = "thinpool-csi-default";
/** Thin ids of the by-hand runs: far above anything the driver allocates. */
const RAW_ID_BASE = 1_000_000;
/** Thin ids of the raw snapshots taken between the driver's: above the other by-hand ones. */
const RAW_INTERLEAVED_ID_BASE = 2_000_000;
const PAGE_SIZE = 100;
const mountCap = {
  access_mode: { mode: "SINGLE_NODE_WRITER" as const },
  mount: { fs_type: "ext4", mount_flags: [] },
};
const blockCap = { access_mode: { mode: "SINGLE_NODE_WRITER" as const }, block: {} };

const envInt = (name: string, fallback: number): number => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
  return value;
};

export function sizesFromEnv(): BenchSizes {
  return {
    samples: envInt("BENCH_SAMPLES", 200),
    snapshots: envInt("BENCH_SNAPSHOTS", 50),
    stages: envInt("BENCH_STAGES", 5),
    deletes: envInt("BENCH_DELETES", 20),
    scaleVolumes: envInt("BENCH_SCALE_VOLUMES", 1000),
    scaleSnapshots: envInt("BENCH_SCALE_SNAPSHOTS", 1000),
    throughputCalls: envInt("BENCH_THROUGHPUT_CALLS", 64),
    scaleProbe: envInt("BENCH_SCALE_PROBE", 50),
    restarts: envInt("BENCH_RESTARTS", 3),
    volumeBytes: 64 * MiB,
  };
}

const disk = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (bench/run.ts sets it)`);
  return value;
};
const DATA = disk("BENCH_DATA_DEV");
const META = disk("BENCH_META_DEV");
const STATE = disk("BENCH_STATE_DEV");
const sizes = sizesFromEnv();
const log = (message: string): void => console.log(`[bench] ${message}`);

const root = "/bench";
const kubelet = join(root, "kubelet");
const devicesSetup: DriverSetup = {
  socket: "/run/bench-csi.sock",
  stateDir: join(root, "state"),
  kubeletDir: kubelet,
  pool: `name=default,type=devices,data=${DATA},metadata=${META}`,
  kubeconfig: join(root, "kubeconfig"),
};
const stagePath = (volumeId: string): string =>
  join(kubelet, "plugins/kubernetes.io/csi/thinpool.csi.dev", deviceOf(volumeId), "globalmount");
const deviceOf = (csiId: string): string => csiId.split("@")[0] as string;
const dmOf = (csiId: string): string => `tpcsi-${deviceOf(csiId)}`;
const dm = (...args: string[]): Argv => ["dmsetup", ...args];
/** A snapshot's freeze by hand: suspend the origin, create_snap, resume. */
const rawFreeze = (originDm: string, originThinId: number, snapId: number): Iteration => [
  [dm("suspend", originDm)],
  [dm("message", POOL_DM, "0", `create_snap ${snapId} ${originThinId}`)],
  [dm("resume", originDm)],
];

// ------------------------------------------------------------------ helpers

async function poolTxid(pool = POOL_DM): Promise<bigint> {
  return parsePoolStatus(await run("dmsetup", ["status", pool])).transactionId;
}

async function poolDevno(pool = POOL_DM): Promise<string> {
  const info = await run("dmsetup", ["info", "-c", "--noheadings", "-o", "major,minor", pool]);
  return info.trim();
}

/** The thin id an active thin device maps (the last field of its table). */
async function thinIdOf(dmName: string): Promise<number> {
  const id = Number((await run("dmsetup", ["table", dmName])).trim().split(/\s+/)[4]);
  if (!Number.isInteger(id)) throw new Error(`${dmName} is not a thin device`);
  return id;
}

/** Per-step medians of freezes timed by hand (suspend, create_snap, resume). */
function freezeParts(steps: number[][]): FreezeParts {
  return {
    suspend: summarize(steps.map((s) => s[0] ?? 0)),
    createSnap: summarize(steps.map((s) => s[1] ?? 0)),
    resume: summarize(steps.map((s) => s[2] ?? 0)),
  };
}

/** Kernel-timed freezes (ms) of each side of the snapshot row, where the kernel can trace them. */
interface KernelFreezes {
  driver: number[];
  rawInterleaved: number[];
  lvm: number[];
}

/** Runs one snapshot and, where the probe runs, adds the kernel-timed freeze it caused to `into`. */
async function withKernelFreeze<T>(
  probe: KernelFreezeProbe | null,
  into: number[],
  work: () => Promise<T>,
): Promise<T> {
  if (!probe) return work();
  const [value, frozen] = await probe.frozenDuring(work);
  if (frozen === undefined) log("kernel freeze probe: no complete suspend and resume seen for one snapshot");
  else into.push(frozen);
  return value;
}

/**
 * Flushes every disk (the guest's page cache, and through virtio flushes the host's image files) and lets
 * the driver's background work settle, so a timed phase does not pay for the writes of the one before:
 * without it the first CreateVolume calls after the by-hand write load waited on the host's writeback
 * (median 463 ms against 139 ms for the rest).
 */
async function quiesce(): Promise<void> {
  await run("sync", []);
  await new Promise((resolve) => setTimeout(resolve, 2000));
}

/** A writer that keeps the filesystem busy (and flushing) while snapshots are taken. */
function startWriteLoad(mountPoint: string): ChildProcess {
  return spawn(
    "bash",
    ["-c", `while :; do dd if=/dev/zero of='${mountPoint}/load' bs=1M count=8 conv=fsync status=none; done`],
    { detached: true, stdio: "ignore" },
  );
}

/** Stops the writer and waits until its last dd has let go of the filesystem. */
async function stopWriteLoad(load: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => load.once("exit", resolve));
  if (load.pid) process.kill(-load.pid, "SIGKILL");
  await exited;
}

/** umount, retried while a just-killed writer still holds the filesystem. */
async function unmount(path: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await run("umount", [path]);
      return;
    } catch (err) {
      if (attempt >= 40) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** `clientCpuMs`: the benchmark's own CPU over the calls (process.cpuUsage), when it was measured. */
function counts(before: DriverStats, after: DriverStats, calls: number, clientCpuMs?: number): CallCounts {
  return {
    spawnsPerCall: (after.spawned - before.spawned) / calls,
    statementsPerCall: (after.statements - before.statements) / calls,
    ...(clientCpuMs === undefined
      ? {}
      : {
          cpuMsPerCall: {
            driver: (after.cpuMs - before.cpuMs) / calls,
            children: (after.childrenCpuMs - before.childrenCpuMs) / calls,
            client: clientCpuMs / calls,
          },
        }),
  };
}

/** Sequential calls, each timed. */
async function timeEach<T>(count: number, call: (i: number) => Promise<T>): Promise<[number[], T[]]> {
  const times: number[] = [];
  const values: T[] = [];
  for (let i = 0; i < count; i++) {
    const [ms, value] = await timed(() => call(i));
    times.push(ms);
    values.push(value);
  }
  return [times, values];
}

const sum = (steps: number[]): number => steps.reduce((a, b) => a + b, 0);

async function createVolume(driver: BenchDriver, name: string, extra: object = {}): Promise<string> {
  const answer = await driver.csi.controller("CreateVolume", {
    name,
    capacity_range: { required_bytes: sizes.volumeBytes },
    volume_capabilities: [mountCap],
    ...extra,
  });
  return answer.volume?.volume_id ?? "";
}

async function createSnapshot(driver: BenchDriver, name: string, volumeId: string): Promise<string> {
  const answer = await driver.csi.controller("CreateSnapshot", { name, source_volume_id: volumeId });
  return answer.snapshot?.snapshot_id ?? "";
}

async function stage(driver: BenchDriver, volumeId: string, capability: object = mountCap): Promise<void> {
  mkdirSync(stagePath(volumeId), { recursive: true });
  await driver.csi.node("NodeStageVolume", {
    volume_id: volumeId,
    staging_target_path: stagePath(volumeId),
    volume_capability: capability,
  });
}

async function unstage(driver: BenchDriver, volumeId: string): Promise<void> {
  await driver.csi.node("NodeUnstageVolume", {
    volume_id: volumeId,
    staging_target_path: stagePath(volumeId),
  });
}

/** fsync/fdatasync and execve counts of the driver process over `calls` calls of `work`. */
async function syscallCounts(pid: number, calls: number, work: () => Promise<void>) {
  const out = join(root, "strace.txt");
  const strace = spawn(
    "strace",
    ["-f", "-c", "-o", out, "-e", "trace=fsync,fdatasync,execve", "-p", String(pid)],
    {
      stdio: "ignore",
    },
  );
  await new Promise((r) => setTimeout(r, 1500));
  await work();
  const exited = new Promise((r) => strace.once("exit", r));
  strace.kill("SIGINT");
  await exited;
  const table = readFileSync(out, "utf8");
  const callsOf = (syscall: string): number => {
    const line = table.split("\n").find((l) => l.trim().endsWith(` ${syscall}`));
    const fields = line?.trim().split(/\s+/) ?? [];
    // % time, seconds, usecs/call, calls, [errors], syscall: failed execve are PATH lookups, not processes.
    return Number(fields[3] ?? 0) - (fields.length === 6 ? Number(fields[4]) : 0);
  };
  return {
    fsyncs: (callsOf("fsync") + callsOf("fdatasync")) / calls,
    execs: callsOf("execve") / calls,
  };
}

/** One freeze in the driver's command log: the window (suspend start to resume end) and what filled it. */
interface FreezeWindow {
  windowMs: number;
  suspendMs: number;
  createSnapMs: number;
  resumeMs: number;
  /** Time in the window outside the three commands: the driver's own work between them. */
  betweenMs: number;
  /** Garbage-collection pauses that fell inside the window. */
  gcMs: number;
}

/** The freezes in the driver's command log, one per snapshot taken of an active origin. */
function freezeWindows(stats: DriverStats): FreezeWindow[] {
  const windows: FreezeWindow[] = [];
  let open: CommandTiming[] = [];
  for (const c of stats.commands) {
    if (c.file !== "dmsetup") continue;
    if (c.args[0] === "suspend") open = [c];
    else if (open.length > 0) open.push(c);
    if (c.args[0] !== "resume" || open.length === 0) continue;
    const start = (open[0] as CommandTiming).startMs;
    const durationOf = (verb: string): number =>
      sum(open.filter((o) => o.args[0] === verb).map((o) => o.endMs - o.startMs));
    const windowMs = c.endMs - start;
    const [suspendMs, createSnapMs, resumeMs] = [
      durationOf("suspend"),
      durationOf("message"),
      durationOf("resume"),
    ];
    const gcMs = sum(
      stats.gcPauses
        .filter((gc) => gc.startMs >= start && gc.startMs < c.endMs)
        .map((gc) => Math.min(gc.durationMs, c.endMs - gc.startMs)),
    );
    windows.push({
      windowMs,
      suspendMs,
      createSnapMs,
      resumeMs,
      betweenMs: windowMs - suspendMs - createSnapMs - resumeMs,
      gcMs,
    });
    open = [];
  }
  return windows;
}

/**
 * What one dmsetup process costs, spawned by the driver's runner (as a change, stdout not piped, and as a
 * query, stdout piped) and by bash, interleaved, while the write load runs: the cost a freeze pays three
 * times. `dmsetup version` does one ioctl and no kernel work, so the figures are process costs.
 */
async function spawnCost(samples: number): Promise<NonNullable<BenchResults["spawnCost"]>> {
  const runner = new ExecaRunner();
  const change: number[] = [];
  const query: number[] = [];
  const bash: number[] = [];
  for (let i = 0; i < samples; i++) {
    change.push((await timed(() => runner.run("dmsetup", ["version"], { discardStdout: true })))[0]);
    query.push((await timed(() => runner.run("dmsetup", ["version"])))[0]);
    bash.push(sum((await timedShellLoop([[[dm("version")]]]))[0] ?? []));
  }
  return { change: summarize(change), query: summarize(query), bash: summarize(bash) };
}

async function openEngine(): Promise<ThinPoolEngine> {
  const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
  return ThinPoolEngine.open({
    store: StateStore.open(join(devicesSetup.stateDir, "state.db")),
    logger: quiet,
    pools: [{ name: "default", source: { type: "devices", data: DATA, metadata: META } }],
    capacity: { overProvisioningRatio: 1000, reservedDataPercent: 0, reservedMetadataPercent: 0 },
  });
}

/** Activates devices through the engine (what NodeStage does first), eight at a time. */
async function activateAll(engine: ThinPoolEngine, names: string[]): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < names.length) await engine.activate(names[next++] as string);
    }),
  );
}

// ------------------------------------------------------------------ by hand (driver stopped)

interface ByHand {
  createFloor: number[];
  deleteFloor: number[];
  stageByHand: number[];
  snapshotFreeze: number[];
  /** Per snapshot: suspend, create_snap, resume, set_transaction_id. */
  snapshotSteps: number[][];
  snapshotCall: number[];
  restoreByHand: number[];
}

async function byHand(): Promise<ByHand> {
  let txid = await poolTxid();
  let id = RAW_ID_BASE;
  const advance = (): Argv => dm("message", POOL_DM, "0", `set_transaction_id ${txid} ${++txid}`);
  const devno = await poolDevno();
  const table = (thinId: number): string => `0 ${sizes.volumeBytes / 512} thin ${devno} ${thinId}`;

  await quiesce();
  log(`by hand: ${sizes.samples} creates (create_thin + set_transaction_id)`);
  const createIds: number[] = [];
  const creates: Iteration[] = [];
  for (let i = 0; i < sizes.samples; i++) {
    createIds.push(id);
    creates.push([[dm("message", POOL_DM, "0", `create_thin ${id++}`)], [advance()]]);
  }
  const createFloor = (await timedShellLoop(creates)).map(sum);

  log(`by hand: ${sizes.deletes} deletes (delete + set_transaction_id)`);
  const deletes: Iteration[] = createIds
    .slice(0, sizes.deletes)
    .map((thinId) => [[dm("message", POOL_DM, "0", `delete ${thinId}`)], [advance()]]);
  await quiesce();
  const deleteFloor = (await timedShellLoop(deletes)).map(sum);
  await timedShellLoop(
    createIds.slice(sizes.deletes).map((thinId) => [[dm("message", POOL_DM, "0", `delete ${thinId}`)]]),
  );

  log(`by hand: ${sizes.stages} first stages (dmsetup create, mkfs.ext4, mount)`);
  const staged: { name: string; thinId: number; mnt: string }[] = [];
  const stageLoop: Iteration[] = [];
  for (let i = 0; i < sizes.stages; i++) {
    const name = `raw-vol-${i}`;
    const mnt = join(root, "raw", name);
    mkdirSync(mnt, { recursive: true });
    staged.push({ name, thinId: id, mnt });
    await run("dmsetup", ["message", POOL_DM, "0", `create_thin ${id}`]);
    stageLoop.push([
      [dm("create", name, "--uuid", `RAW-${name}`, "--table", table(id++))],
      [["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-m", "0", `/dev/mapper/${name}`]],
      [["mount", "-t", "ext4", `/dev/mapper/${name}`, mnt]],
    ]);
  }
  await quiesce();
  const stageByHand = (await timedShellLoop(stageLoop)).map(sum);

  const origin = staged[0] as (typeof staged)[number];
  log(
    `by hand: ${sizes.snapshots} snapshots under write load (suspend, create_snap, resume, set_transaction_id)`,
  );
  const load = startWriteLoad(origin.mnt);
  await new Promise((r) => setTimeout(r, 2000));
  const snapIds: number[] = [];
  const snaps: Iteration[] = [];
  for (let i = 0; i < sizes.snapshots; i++) {
    snapIds.push(id);
    snaps.push([...rawFreeze(origin.name, origin.thinId, id++), [advance()]]);
  }
  const snapSteps = await timedShellLoop(snaps);
  await stopWriteLoad(load);

  log(`by hand: ${sizes.stages} restores (create_snap, set_transaction_id, dmsetup create, mount)`);
  const restores: Iteration[] = [];
  const restored: string[] = [];
  for (let i = 0; i < sizes.stages; i++) {
    const name = `raw-restore-${i}`;
    const mnt = join(root, "raw", name);
    mkdirSync(mnt, { recursive: true });
    restored.push(name);
    restores.push([
      [dm("message", POOL_DM, "0", `create_snap ${id} ${snapIds[i % snapIds.length] as number}`)],
      [advance()],
      [dm("create", name, "--uuid", `RAW-${name}`, "--table", table(id++))],
      [["mount", "-t", "ext4", `/dev/mapper/${name}`, mnt]],
    ]);
  }
  const restoreByHand = (await timedShellLoop(restores)).map(sum);

  // Leave the pool as the driver expects it: no device it does not know.
  for (const name of [...restored, ...staged.map((s) => s.name)]) {
    await unmount(join(root, "raw", name));
    await run("dmsetup", ["remove", name]);
  }
  await timedShellLoop(
    [...staged.map((s) => s.thinId), ...snapIds, ...restored.map((_, i) => id - restored.length + i)].map(
      (thinId) => [[dm("message", POOL_DM, "0", `delete ${thinId}`)]],
    ),
  );
  return {
    createFloor,
    deleteFloor,
    stageByHand,
    snapshotFreeze: snapSteps.map((s) => sum(s.slice(0, 3))),
    snapshotSteps: snapSteps,
    snapshotCall: snapSteps.map(sum),
    restoreByHand,
  };
}

// ------------------------------------------------------------------ LVM

async function lvm(
  probe: KernelFreezeProbe | null,
  frozen: number[],
): Promise<{ create: number[]; snapshot: number[]; remove: number[] }> {
  await removeAllDmDevices();
  await zeroHead(DATA);
  await zeroHead(META);
  const vg = "benchvg";
  await run("pvcreate", ["-qy", DATA, META]);
  await run("vgcreate", ["-q", vg, DATA, META]);
  // Same layout as the driver's pool: data on the data disk, metadata on the metadata disk, 64 KiB
  // chunks, zeroing on, errors (not queueing) when full.
  const metaMiB = Math.floor(Number(await run("blockdev", ["--getsize64", META])) / MiB) - 16;
  const dataMiB = Math.floor(Number(await run("blockdev", ["--getsize64", DATA])) / MiB) - 16;
  await run("lvcreate", ["-qy", "-n", "pmeta", "-L", `${metaMiB}m`, vg, META]);
  await run("lvcreate", ["-qy", "-n", "pool", "-L", `${dataMiB}m`, vg, DATA]);
  await run("lvconvert", [
    "-qy",
    "--type",
    "thin-pool",
    "--poolmetadata",
    `${vg}/pmeta`,
    "--poolmetadataspare",
    "n",
    "--chunksize",
    "64k",
    "--zero",
    "y",
    `${vg}/pool`,
  ]);
  await run("lvchange", ["-q", "--errorwhenfull", "y", `${vg}/pool`]);

  log(`LVM: ${sizes.samples} lvcreate --thin`);
  const size = `${sizes.volumeBytes / MiB}m`;
  const creates: Iteration[] = Array.from({ length: sizes.samples }, (_, i) => [
    [["lvcreate", "-qq", "--thin", "-V", size, "--activate", "n", "-n", `lv${i}`, `${vg}/pool`]],
  ]);
  await quiesce();
  const create = (await timedShellLoop(creates)).map(sum);

  log(`LVM: ${sizes.deletes} lvremove`);
  const removes: Iteration[] = Array.from({ length: sizes.deletes }, (_, i) => [
    [["lvremove", "-qqy", `${vg}/lv${i}`]],
  ]);
  const remove = (await timedShellLoop(removes)).map(sum);

  log(`LVM: ${sizes.snapshots} lvcreate -s of a mounted origin under write load`);
  await run("lvcreate", ["-qq", "--thin", "-V", size, "-n", "origin", `${vg}/pool`]);
  await run("mkfs.ext4", ["-q", "-F", "-E", "nodiscard", "-m", "0", `/dev/${vg}/origin`]);
  const mnt = join(root, "lvm-origin");
  mkdirSync(mnt, { recursive: true });
  await run("mount", [`/dev/${vg}/origin`, mnt]);
  const load = startWriteLoad(mnt);
  await new Promise((r) => setTimeout(r, 2000));
  // One bash process per snapshot, so the kernel probe can tell the freezes apart; the timestamps are
  // taken inside the script, so its start is not timed.
  const snapshot: number[] = [];
  for (let i = 0; i < sizes.snapshots; i++) {
    const lvcreate: Iteration = [[["lvcreate", "-qq", "-s", "-n", `snap${i}`, `${vg}/origin`]]];
    snapshot.push(sum((await withKernelFreeze(probe, frozen, () => timedShellLoop([lvcreate])))[0] ?? []));
  }
  await stopWriteLoad(load);
  await unmount(mnt);
  await run("vgchange", ["-qan", vg]);
  return { create, snapshot, remove };
}

// ------------------------------------------------------------------ the run

/** The dmsetup on PATH, which the driver and the shell loops both run, and how it is linked. */
async function describeDmsetup(): Promise<string> {
  const found = await findOnPath("dmsetup");
  if (found === null) throw new Error("dmsetup is not on PATH");
  // ldd fails on a static executable, saying so on stdout; any other failure says nothing about the binary.
  const linked = await run("ldd", [found]).then(
    () => "dynamically linked",
    (err: unknown) => {
      const { stdout, stderr } = err as { stdout?: unknown; stderr?: unknown };
      return /not a dynamic executable/.test(`${String(stdout)} ${String(stderr)}`)
        ? "statically linked"
        : "linking unknown: ldd failed";
    },
  );
  const sourceFile = join(dirname(found), "SOURCE");
  const source = existsSync(sourceFile) ? `, ${readFileSync(sourceFile, "utf8").trim()}` : "";
  return `${found} (${linked}${source})`;
}

async function main(): Promise<void> {
  const kernel = (await run("uname", ["-r"])).trim();
  const dmsetup = await describeDmsetup();
  log(`kernel ${kernel}; dmsetup ${dmsetup}; sizes ${JSON.stringify(sizes)}`);
  await removeAllDmDevices();
  await zeroHead(META);
  mkdirSync(root, { recursive: true });
  await run("mkfs.ext4", ["-q", "-F", STATE]);
  await run("mount", [STATE, root]);
  mkdirSync(kubelet, { recursive: true });
  // A cluster nobody answers: the driver only needs to find a configuration, as it does in a pod.
  writeFileSync(
    devicesSetup.kubeconfig,
    [
      "apiVersion: v1",
      "kind: Config",
      "clusters: [{ name: bench, cluster: { server: 'https://127.0.0.1:6443' } }]",
      "users: [{ name: bench, user: { token: bench } }]",
      "contexts: [{ name: bench, context: { cluster: bench, user: bench } }]",
      "current-context: bench",
      "",
    ].join("\n"),
  );

  // 1. Cold start on an empty store (the pool is created), idle memory.
  let driver = await BenchDriver.start(devicesSetup);
  const emptyStartToReadyMs = driver.startToReadyMs;
  const idle = await driver.stats();
  log(
    `empty start to ready ${emptyStartToReadyMs.toFixed(0)} ms, imports ${idle.importsDoneMs.toFixed(0)} ms`,
  );
  await driver.stop();

  // 2. The same kernel steps by hand.
  const hand = await byHand();

  // 3. The driver over its socket.
  driver = await BenchDriver.start(devicesSetup);
  log(`driver: ${sizes.samples} CreateVolume`);
  await quiesce();
  let before = await driver.stats("reset");
  const clientCpu = process.cpuUsage();
  const [createTimes, volumeIds] = await timeEach(sizes.samples, (i) => createVolume(driver, `pvc-lat-${i}`));
  const clientCpuUsed = process.cpuUsage(clientCpu);
  const afterCreates = await driver.stats("reset");
  const createCounts = counts(
    before,
    afterCreates,
    sizes.samples,
    (clientCpuUsed.user + clientCpuUsed.system) / 1000,
  );
  const stream = createStream(afterCreates.commands, sizes.samples);

  log("driver: syscalls of 10 CreateVolume (strace, not timed)");
  const syscallsPerCreate = await syscallCounts(driver.pid, 10, async () => {
    for (let i = 0; i < 10; i++) volumeIds.push(await createVolume(driver, `pvc-strace-${i}`));
  }).catch((err: unknown) => {
    log(`strace failed: ${String(err)}`);
    return null;
  });

  const throughput: BenchResults["throughput"] = [];
  for (const concurrency of [1, 8, 32]) {
    let next = 0;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < sizes.throughputCalls) {
          const i = next++;
          volumeIds.push(await createVolume(driver, `pvc-tp${concurrency}-${i}`));
        }
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    throughput.push({ concurrency, volumesPerSecond: sizes.throughputCalls / seconds });
    log(`throughput at ${concurrency}: ${(sizes.throughputCalls / seconds).toFixed(1)} volumes/s`);
  }

  log(`driver: ${sizes.stages} first NodeStage (mkfs + mount)`);
  const toStage = volumeIds.slice(0, sizes.stages);
  await quiesce();
  before = await driver.stats("reset");
  const [stageTimes] = await timeEach(sizes.stages, (i) => stage(driver, toStage[i] as string));
  const stageCounts = counts(before, await driver.stats("reset"), sizes.stages);

  log(
    `driver: ${sizes.snapshots} CreateSnapshot of a mounted volume under write load, each followed by ` +
      "the raw suspend, create_snap, resume of the same origin",
  );
  const origin = toStage[0] as string;
  const originThinId = await thinIdOf(dmOf(origin));
  const load = startWriteLoad(stagePath(origin));
  await new Promise((r) => setTimeout(r, 2000));
  const snapBefore = await driver.stats("reset");
  const snapTimes: number[] = [];
  const snapshotIds: string[] = [];
  const rawInterleaved: number[][] = [];
  const kernelFreezes: KernelFreezes = { driver: [], rawInterleaved: [], lvm: [] };
  const freezeProbe = await KernelFreezeProbe.open(log);
  // Each side starts after the same pause: the driver's background status read after a change, or the
  // bash process just spawned, must not run into the other side's freeze.
  const pause = (): Promise<unknown> => new Promise((r) => setTimeout(r, 500));
  for (let i = 0; i < sizes.snapshots; i++) {
    await pause();
    const [ms, id] = await withKernelFreeze(freezeProbe, kernelFreezes.driver, () =>
      timed(() => createSnapshot(driver, `snap-load-${i}`, origin)),
    );
    await pause();
    snapTimes.push(ms);
    snapshotIds.push(id);
    // The driver does not know these ids; its origin is resumed as it was, and they are deleted below.
    const raw = await withKernelFreeze(freezeProbe, kernelFreezes.rawInterleaved, () =>
      timedShellLoop([rawFreeze(dmOf(origin), originThinId, RAW_INTERLEAVED_ID_BASE + i)]),
    ).catch(async (err: unknown) => {
      // set -e stops the script at the failing step: never leave the driver's origin (and the load) frozen.
      await run("dmsetup", ["resume", dmOf(origin)]).catch(() => undefined);
      throw err;
    });
    rawInterleaved.push(...raw);
  }
  const snapStats = await driver.stats("reset");
  log("spawn cost under the same load: driver's runner against bash (dmsetup version)");
  const spawnCosts = await spawnCost(sizes.snapshots * 2);
  await stopWriteLoad(load);
  await timedShellLoop(
    rawInterleaved.map((_, i) => [[dm("message", POOL_DM, "0", `delete ${RAW_INTERLEAVED_ID_BASE + i}`)]]),
  );
  const driverFreeze = freezeWindows(snapStats);

  log(`driver: ${sizes.stages} restores (CreateVolume from a snapshot + NodeStage)`);
  const [restoreTimes, restoredIds] = await timeEach(sizes.stages, async (i) => {
    const id = await createVolume(driver, `pvc-restore-${i}`, {
      volume_content_source: { snapshot: { snapshot_id: snapshotIds[i % snapshotIds.length] } },
    });
    await stage(driver, id);
    return id;
  });
  for (const id of [...toStage, ...restoredIds]) await unstage(driver, id);

  log(`driver: ${sizes.deletes} DeleteVolume without discard`);
  const deletable = volumeIds.splice(sizes.stages, sizes.deletes);
  await quiesce();
  before = await driver.stats("reset");
  const [deleteTimes] = await timeEach(deletable.length, (i) =>
    driver.csi.controller("DeleteVolume", { volume_id: deletable[i] as string }),
  );
  const deleteCounts = counts(before, await driver.stats("reset"), deletable.length);

  // 4. Scale: latency at the start (the first calls above, a nearly empty pool) and at the end.
  const probe = sizes.scaleProbe;
  const createAtStart = summarize(createTimes.slice(0, probe));
  const existing = volumeIds.length + restoredIds.length;
  log(`scale: up to ${sizes.scaleVolumes} volumes (${existing} exist)`);
  for (let i = 0; existing + i < sizes.scaleVolumes; i++)
    volumeIds.push(await createVolume(driver, `pvc-scale-${i}`));
  await quiesce();
  const [atVolumes, probeIds] = await timeEach(probe, (i) => createVolume(driver, `pvc-probe-a-${i}`));
  volumeIds.push(...probeIds);
  log(`scale: ${sizes.scaleSnapshots} snapshots of inactive volumes`);
  const snapshotTimes: number[] = [];
  for (let i = 0; i < sizes.scaleSnapshots; i++) {
    const [ms, id] = await timed(() =>
      createSnapshot(
        driver,
        `snap-scale-${i}`,
        volumeIds[sizes.stages + (i % (volumeIds.length - sizes.stages))] as string,
      ),
    );
    snapshotTimes.push(ms);
    snapshotIds.push(id);
  }
  await quiesce();
  const [atEnd, endIds] = await timeEach(probe, (i) => createVolume(driver, `pvc-probe-b-${i}`));
  volumeIds.push(...endIds);

  const listPages = async (method: "ListVolumes" | "ListSnapshots"): Promise<number[]> => {
    const times: number[] = [];
    let token = "";
    do {
      const request = { max_entries: PAGE_SIZE, starting_token: token };
      const [ms, page] = await timed<{ next_token: string }>(() =>
        method === "ListVolumes"
          ? driver.csi.controller("ListVolumes", request)
          : driver.csi.controller("ListSnapshots", request),
      );
      times.push(ms);
      token = page.next_token;
    } while (token);
    return times;
  };
  log("scale: ListVolumes and ListSnapshots, pages of 100");
  const listVolumesInactive = await listPages("ListVolumes");
  const listSnapshots = await listPages("ListSnapshots");
  const devices = volumeIds.length + restoredIds.length + snapshotIds.length;
  await driver.stop();

  // 5. Reboot: every volume active, then device-mapper emptied; by hand vs the driver's reactivation.
  log("reboot: activating every volume through the engine");
  let engine = await openEngine();
  const volumes = engine.listDevices({ kind: "volume" }).map((d) => d.name);
  await activateAll(engine, volumes);
  engine.close();
  const tables = [...(await run("dmsetup", ["table"])).matchAll(/^(tpcsi-\S+): (.+)$/gm)].map((m) => ({
    name: m[1] as string,
    table: m[2] as string,
  }));
  const removeThins = () => timedShellLoop(tables.map((t) => [[dm("remove", t.name)]]));
  await removeThins();
  log(`reboot: ${tables.length} dmsetup create by hand`);
  const rebootFloorMs = sum(
    (
      await timedShellLoop(
        tables.map((t) => [
          [dm("create", t.name, "--uuid", `THINPOOL-CSI-${t.name.slice(6)}`, "--table", t.table)],
        ]),
      )
    ).map(sum),
  );
  await removeThins();
  await run("dmsetup", ["remove", POOL_DM]);
  driver = await BenchDriver.start(devicesSetup);
  const rebootStartToReadyMs = driver.startToReadyMs;
  const reboot = await driver.stats();
  log(`reboot: driver reactivated ${reboot.reconcile?.reactivated} in ${reboot.reconcile?.durationMs} ms`);
  await driver.stop();

  // 6. Restart with every device (volumes and snapshots) active.
  log("restart: activating every snapshot through the engine");
  engine = await openEngine();
  await activateAll(
    engine,
    engine
      .listDevices({ kind: "snapshot" })
      .filter((d) => d.state !== DeviceState.Active)
      .map((d) => d.name),
  );
  const restartActive = engine.listDevices().filter((d) => d.state === DeviceState.Active).length;
  engine.close();
  driver = await BenchDriver.start(devicesSetup);
  const restartStartToReadyMs = driver.startToReadyMs;
  const restart = await driver.stats();
  log(
    `restart with ${restartActive} active: ready in ${driver.startToReadyMs.toFixed(0)} ms, reconcile ${restart.reconcile?.durationMs} ms`,
  );
  const listVolumesActive = await listPages("ListVolumes");
  await listPages("ListSnapshots");
  const scaleStats = await driver.stats();
  await driver.stop();
  // One restart is one sample of a load-sensitive figure (two runs of the same code gave 3.9 and 8.1 s).
  const restarts = [restart.reconcile];
  while (restarts.length < (sizes.restarts ?? 1)) {
    driver = await BenchDriver.start(devicesSetup);
    restarts.push((await driver.stats()).reconcile);
    await driver.stop();
  }
  const restartReports = restarts
    .filter((report) => report !== null)
    .sort((a, b) => a.durationMs - b.durationMs);
  const medianRestart = restartReports[Math.floor((restartReports.length - 1) / 2)];
  log(`restart reconciliations: ${restartReports.map((report) => report.durationMs).join(", ")} ms`);

  // 7. Discard: a loop pool is where the driver discards on delete; by hand on the same pool.
  await removeAllDmDevices();
  const loop = await discardRun();
  await run("losetup", ["-D"]);

  // 8. LVM on the same disks.
  await run("umount", [root]).catch(() => undefined);
  const lvmResults = await lvm(freezeProbe, kernelFreezes.lvm);
  await freezeProbe?.close();

  const results: BenchResults = {
    sizes,
    kernel,
    dmsetup,
    createVolume: {
      driver: summarize(createTimes),
      floor: summarize(hand.createFloor),
      lvm: summarize(lvmResults.create),
      counts: createCounts,
      stream,
    },
    syscallsPerCreate,
    createSnapshot: {
      driverFreeze: summarize(driverFreeze.map((w) => w.windowMs)),
      driverCall: summarize(snapTimes),
      floorFreeze: summarize(hand.snapshotFreeze),
      floorFreezeInterleaved: summarize(rawInterleaved.map(sum)),
      ...(freezeProbe
        ? {
            kernelFreeze: {
              driver: summarize(kernelFreezes.driver),
              rawInterleaved: summarize(kernelFreezes.rawInterleaved),
              lvm: summarize(kernelFreezes.lvm),
            },
          }
        : {}),
      floorCall: summarize(hand.snapshotCall),
      lvmCall: summarize(lvmResults.snapshot),
      counts: counts(snapBefore, snapStats, sizes.snapshots),
      freezeParts: {
        driver: {
          suspend: summarize(driverFreeze.map((w) => w.suspendMs)),
          createSnap: summarize(driverFreeze.map((w) => w.createSnapMs)),
          resume: summarize(driverFreeze.map((w) => w.resumeMs)),
          between: summarize(driverFreeze.map((w) => w.betweenMs)),
          gc: summarize(driverFreeze.map((w) => w.gcMs)),
        },
        raw: freezeParts(hand.snapshotSteps),
        rawInterleaved: freezeParts(rawInterleaved),
      },
    },
    spawnCost: spawnCosts,
    nodeStage: { driver: summarize(stageTimes), byHand: summarize(hand.stageByHand), counts: stageCounts },
    restore: { driver: summarize(restoreTimes), byHand: summarize(hand.restoreByHand) },
    deleteVolume: {
      driver: summarize(deleteTimes),
      floor: summarize(hand.deleteFloor),
      lvm: summarize(lvmResults.remove),
      driverDiscard: summarize(loop.driver),
      floorDiscard: summarize(loop.floor),
      counts: deleteCounts,
    },
    throughput,
    scale: {
      devices,
      createAtStart,
      createAtVolumes: summarize(atVolumes),
      createAtEnd: summarize(atEnd),
      snapshotAtStart: summarize(snapshotTimes.slice(0, probe)),
      snapshotAtEnd: summarize(snapshotTimes.slice(-probe)),
      listVolumesPage: summarize(listVolumesActive),
      listVolumesInactivePage: summarize(listVolumesInactive),
      listSnapshotsPage: summarize(listSnapshots),
      pageSize: PAGE_SIZE,
    },
    startup: {
      emptyStartToReadyMs,
      importsMs: idle.importsDoneMs,
      restartActive,
      restartStartToReadyMs,
      restartReconcileMs: medianRestart?.durationMs ?? Number.NaN,
      restartReconcileSamplesMs: restarts.map((report) => report?.durationMs ?? Number.NaN),
      restartPhasesMs: medianRestart?.phasesMs,
      rebootReactivated: reboot.reconcile?.reactivated ?? 0,
      rebootReconcileMs: reboot.reconcile?.durationMs ?? Number.NaN,
      rebootStartToReadyMs,
      rebootFloorMs,
    },
    memory: {
      idleRssBytes: idle.rssBytes,
      scaleRssBytes: scaleStats.rssBytes,
      scaleHeapBytes: scaleStats.heapUsedBytes,
    },
  };
  const dir = process.env.THINPOOL_VM_RESULT_DIR;
  if (dir) writeFileSync(join(dir, "results.json"), `${JSON.stringify(results, null, 2)}\n`);
  log("done");
}

/** DeleteVolume with discard on a loop pool (8 MiB written per volume), and the same by hand. */
async function discardRun(): Promise<{ driver: number[]; floor: number[] }> {
  const setup: DriverSetup = {
    ...devicesSetup,
    stateDir: join(root, "state-loop"),
    pool: "name=default,type=loop,dataSize=1Gi,metadataSize=64Mi",
  };
  const fill = (device: string) =>
    run("dd", ["if=/dev/urandom", `of=${device}`, "bs=1M", "count=8", "oflag=direct", "status=none"]);
  const driver = await BenchDriver.start(setup);
  log(`discard: ${sizes.deletes} DeleteVolume with discard on a loop pool`);
  const ids: string[] = [];
  for (let i = 0; i < sizes.deletes; i++) {
    const id = await createVolume(driver, `pvc-discard-${i}`);
    await stage(driver, id, blockCap);
    await fill(`/dev/mapper/${dmOf(id)}`);
    await unstage(driver, id);
    ids.push(id);
  }
  await quiesce();
  const [times] = await timeEach(ids.length, (i) =>
    driver.csi.controller("DeleteVolume", { volume_id: ids[i] as string }),
  );
  await driver.stop();

  log(`discard: ${sizes.deletes} by hand (create, blkdiscard, remove, delete, set_transaction_id)`);
  let txid = await poolTxid();
  const devno = await poolDevno();
  const loopIteration: Iteration[] = [];
  for (let i = 0; i < sizes.deletes; i++) {
    const thinId = RAW_ID_BASE + i;
    const name = `raw-discard-${i}`;
    const table = `0 ${sizes.volumeBytes / 512} thin ${devno} ${thinId}`;
    await run("dmsetup", ["message", POOL_DM, "0", `create_thin ${thinId}`]);
    await run("dmsetup", ["create", name, "--table", table]);
    await fill(`/dev/mapper/${name}`);
    await run("dmsetup", ["remove", name]);
    loopIteration.push([
      [dm("create", name, "--table", table)],
      [["blkdiscard", `/dev/mapper/${name}`]],
      [dm("remove", name)],
      [dm("message", POOL_DM, "0", `delete ${thinId}`)],
      [dm("message", POOL_DM, "0", `set_transaction_id ${txid} ${++txid}`)],
    ]);
  }
  await quiesce();
  const floor = (await timedShellLoop(loopIteration)).map(sum);
  await run("dmsetup", ["remove", POOL_DM]);
  return { driver: times, floor };
}

export type { Summary };

main().catch((err: unknown) => {
  console.error(`[bench] failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});
