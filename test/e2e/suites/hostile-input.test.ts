/**
 * Hostile input (issue 5): hundreds of malformed and adversarial CSI requests from
 * test/e2e/support/hostile-requests.ts against the real driver, started in-process inside the VM on the
 * real disks and driven over its unix socket, as in csi-lifecycle.test.ts.
 *
 * Figures: requests tried; crashes (an unhandled rejection or exception, a call that never answers, or a
 * Probe that is not ready after a batch); wrong codes (an answer other than the code the spec names,
 * each printed; also an accepted read-only publish that is not read-only, and races with two results);
 * leaks (anything a refused request left behind or took away: thin devices and their states and sizes in
 * the store, stage/publish records and mounts after every wave; dm devices, the file trees of the kubelet
 * directory and of the directory symlinks point out to, the /tmp entries named like this suite's, and the
 * absolute paths the requests name, after every batch). Accepted cases are undone by their cleanup calls
 * before the comparison, so they must leave nothing either. The figures go to hostile-input.json in the
 * harness's result directory when there is one, and to one line on stdout.
 *
 * Refusals go out in waves of up to WAVE requests whose lock keys (the pipeline's own table) are
 * disjoint, so none answers ABORTED because of another; a leak is reported with the wave's labels.
 * Accepted cases run alone. Under TCG one request costs ~0.1 s of CPU, so the waves are what keep the
 * file within its ~3 minute budget.
 */
import assert from "node:assert/strict";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import { CsiClient } from "../../../src/csi/client.js";
import { parseMountInfo } from "../../../src/node/mounts.js";
import type { RunningDriver } from "../../../src/server/driver.js";
import type { EngineHost } from "../../../src/server/engine-wiring.js";
import { CONTROLLER_LOCK_KEYS, NODE_LOCK_KEYS } from "../../../src/server/operation-locks.js";
import { vmResultDir } from "../../support/e2e-env.js";
import {
  coDirectories,
  fixtureVolumeRequest,
  hostileCases,
  hostileRaces,
  RESULT,
  type Category,
  type CsiCall,
  type HostileCase,
  type HostileContext,
  type HostileRace,
} from "../support/hostile-requests.js";
import { startTestDriver } from "../support/driver.js";
import { E2E_META_DEV, removeAllDmDevices, sh, zeroHead } from "../support/vm-env.js";

const MiB = 1024 * 1024;
const NODE = "node-a";
const OTHER_NODE = "node-b";
const CALL_TIMEOUT_MS = 90_000;
/** Requests between two full comparisons (dm devices, file trees). */
const BATCH = 50;
/** Refusals sent at once (with disjoint lock keys, so none can answer ABORTED because of another). */
const WAVE = 4;
/** A code no gRPC status has: the call never answered within CALL_TIMEOUT_MS. */
const NO_ANSWER = -1;

type AnyCall = (method: string, request: unknown, timeoutMs?: number) => Promise<unknown>;

interface Answer {
  code: number;
  details: string;
  response?: unknown;
}

/** What a request may change: compared before and after, as sorted lines (a multiset). */
interface Observed {
  /** In-process, cheap: taken after every request. */
  devices: string[];
  nodePaths: string[];
  mounts: string[];
  /** Taken after every batch. */
  dm?: string[];
  files?: string[];
}

interface Figures {
  tried: number;
  crashes: number;
  wrongCodes: number;
  leaks: number;
  byCategory: Record<string, { tried: number; wrongCodes: number; leaks: number }>;
  mismatches: string[];
  leaked: string[];
  crashed: string[];
  durationMs: number;
}

function diff(before: readonly string[], after: readonly string[]): string[] {
  const count = new Map<string, number>();
  for (const line of before) count.set(line, (count.get(line) ?? 0) + 1);
  const added: string[] = [];
  for (const line of after) {
    const n = count.get(line) ?? 0;
    if (n > 0) count.set(line, n - 1);
    else added.push(`+ ${line}`);
  }
  const removed = [...count].flatMap(([line, n]) => Array.from({ length: n }, () => `- ${line}`));
  return [...added, ...removed];
}

function observedDiff(a: Observed, b: Observed): string[] {
  const parts: Array<[string, string[] | undefined, string[] | undefined]> = [
    ["device", a.devices, b.devices],
    ["node path", a.nodePaths, b.nodePaths],
    ["mount", a.mounts, b.mounts],
    ["dm", a.dm, b.dm],
    ["file", a.files, b.files],
  ];
  return parts.flatMap(([what, x, y]) =>
    x && y ? diff(x, y).map((line) => `${line.slice(0, 2)}${what} ${line.slice(2)}`) : [],
  );
}

const show = (s: string, max = 90): string => {
  const json = JSON.stringify(s);
  return json.length > max ? `${json.slice(0, max - 12)}...(${Buffer.byteLength(s)} B)` : json;
};

describe("hostile input against the real driver over its socket", function () {
  this.timeout(300_000);
  const dir = mkdtempSync(join(tmpdir(), "hostile-"));
  const outside = mkdtempSync(join(tmpdir(), "hostile-outside-"));
  const kubelet = join(dir, "kubelet");
  const plugin = join(kubelet, "plugins/kubernetes.io/csi/thinpool.csi.dev");
  let driver: RunningDriver<EngineHost>;
  let csi: CsiClient;
  let ctx: HostileContext;
  let cases: HostileCase[] = [];
  let races: HostileRace[] = [];
  let fixtureCalls: CsiCall[] = [];
  let probePaths: string[] = [];
  let startedAt = Date.now();
  const figures: Figures = {
    tried: 0,
    crashes: 0,
    wrongCodes: 0,
    leaks: 0,
    byCategory: {},
    mismatches: [],
    leaked: [],
    crashed: [],
    durationMs: 0,
  };
  const onRejection = (reason: unknown) => {
    figures.crashes++;
    figures.crashed.push(`unhandled rejection: ${String(reason)}`);
  };
  const onException = (err: Error) => {
    figures.crashes++;
    figures.crashed.push(`uncaught exception: ${err.stack ?? err.message}`);
  };

  const send = async (c: CsiCall): Promise<Answer> => {
    const fn = csi[c.service] as unknown as AnyCall;
    try {
      const response = await fn.call(csi, c.method, c.request, CALL_TIMEOUT_MS);
      return { code: status.OK, details: "", response };
    } catch (err) {
      const e = err as Partial<ServiceError>;
      if (typeof e.code !== "number") throw err; // the client could not even encode it: a generator bug
      return { code: e.code === status.DEADLINE_EXCEEDED ? NO_ANSWER : e.code, details: e.details ?? "" };
    }
  };

  const resultId = (answer: Answer): string | undefined => {
    const r = answer.response as
      { volume?: { volume_id?: string } | null; snapshot?: { snapshot_id?: string } | null } | undefined;
    return r?.volume?.volume_id || r?.snapshot?.snapshot_id || undefined;
  };

  const substitute = (c: CsiCall, id: string): CsiCall => ({
    ...c,
    request: Object.fromEntries(Object.entries(c.request).map(([k, v]) => [k, v === RESULT ? id : v])),
  });

  const mountLines = (): string[] =>
    parseMountInfo(readFileSync("/proc/self/mountinfo", "utf8"))
      .map((m) => `${m.mountPoint} ${m.source} ${m.fsType} ${m.options.includes("ro") ? "ro" : "rw"}`)
      .sort();

  const cheap = (): Observed => {
    const store = driver.engine.store;
    const devices = store.listDevices();
    return {
      devices: devices.map((d) => `${d.name} ${d.kind} ${d.state} ${d.sizeBytes}`).sort(),
      nodePaths: devices
        .flatMap((d) =>
          (["stage", "publish"] as const).flatMap((role) =>
            store.getNodePaths(d.name, role).map((p) => `${d.name} ${role} ${p.path}`),
          ),
        )
        .sort(),
      mounts: mountLines(),
    };
  };

  const walk = (root: string, out: string[], depth: number): void => {
    let entries;
    try {
      entries = readdirSync(root, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(root, e.name);
      if (e.isSymbolicLink()) out.push(`link ${p} -> ${readlinkSync(p)}`);
      else if (e.isDirectory()) {
        out.push(`dir ${p}`);
        if (depth > 1) walk(p, out, depth - 1);
      } else out.push(`${e.isFile() ? "file" : "node"} ${p}`);
    }
  };

  const full = async (): Promise<Observed> => {
    const files: string[] = [];
    walk(dir, files, 64);
    walk(outside, files, 64);
    // The guest sees the host's /tmp live (9p under the overlay), where other runs come and go: only
    // entries a hostile request could have made there (every such path this suite uses says "hostile").
    walk(tmpdir(), files, 1);
    for (let i = files.length - 1; i >= 0; i--) {
      const line = files[i] as string;
      const path = line.slice(line.indexOf(" ") + 1);
      if (
        path.startsWith(`${tmpdir()}/`) &&
        !path.slice(tmpdir().length + 1).includes("/") &&
        !path.includes("hostile")
      )
        files.splice(i, 1);
    }
    for (const p of probePaths) {
      try {
        const s = lstatSync(p);
        files.push(`${s.isDirectory() ? "dir" : s.isSymbolicLink() ? "link" : "file"} ${p}`);
      } catch {
        // absent, as it should be
      }
    }
    const dm = (await sh("dmsetup", ["ls"]))
      .split("\n")
      .map((l) => l.split(/\s+/)[0] ?? "")
      .filter((n) => n && n !== "No");
    return { ...cheap(), dm: dm.sort(), files: files.sort() };
  };

  const ensureKubeletExtras = (): void => {
    mkdirSync(join(kubelet, "pods/busy/volumes/kubernetes.io~csi/pv/mount"), { recursive: true });
    writeFileSync(join(kubelet, "pods/busy/volumes/kubernetes.io~csi/pv/mount/keep"), "kubelet data\n");
    writeFileSync(join(kubelet, "config.yaml"), "kind: KubeletConfiguration\n");
    mkdirSync(join(outside, "target-dir"), { recursive: true });
    writeFileSync(join(outside, "canary"), "must stay alone\n");
    const link = (target: string, path: string) => {
      mkdirSync(join(path, ".."), { recursive: true });
      if (!existsSync(path) && !lstatSafe(path)) symlinkSync(target, path);
    };
    link(outside, ctx.paths.linkToOutside);
    link("/etc", ctx.paths.linkToEtc);
    link(join(outside, "target-dir"), ctx.paths.targetLink);
    link(join(outside, "not-there"), ctx.paths.danglingTarget);
    link(join(outside, "missing-dir"), ctx.paths.danglingDir);
    link(ctx.paths.loop, ctx.paths.loop);
  };

  /** Puts back what a misbehaving request made or took: for the next case, not for the figures. */
  const repair = async (baseline: Observed): Promise<void> => {
    const now = cheap();
    const idOf = (device: string) => `${device}@${NODE}`;
    for (const line of diff(baseline.nodePaths, now.nodePaths).filter((l) => l.startsWith("+ "))) {
      const [device, role, ...rest] = line.slice(2).split(" ");
      const path = rest.join(" ");
      await send(
        role === "publish"
          ? {
              service: "node",
              method: "NodeUnpublishVolume",
              request: { volume_id: idOf(device ?? ""), target_path: path },
            }
          : {
              service: "node",
              method: "NodeUnstageVolume",
              request: { volume_id: idOf(device ?? ""), staging_target_path: path },
            },
      );
    }
    for (const line of diff(baseline.mounts, mountLines()).filter((l) => l.startsWith("+ "))) {
      await sh("umount", ["-l", line.slice(2).split(" ")[0] ?? ""]).catch(() => undefined);
    }
    const names = (o: Observed) => o.devices.map((d) => d.split(" ")[0] ?? "");
    const base = new Set(names(baseline));
    for (const device of names(cheap()).filter((d) => !base.has(d))) {
      await send(
        device.startsWith("v-")
          ? { service: "controller", method: "DeleteVolume", request: { volume_id: idOf(device) } }
          : { service: "controller", method: "DeleteSnapshot", request: { snapshot_id: idOf(device) } },
      );
    }
    if (baseline.files && baseline.dm) {
      const after = await full();
      const added = diff(baseline.files, after.files ?? [])
        .filter((l) => l.startsWith("+ "))
        .map((l) => l.slice(2).split(" ").slice(1).join(" ").split(" -> ")[0] as string)
        .filter((p) => p.startsWith(`${dir}/`) || p.startsWith(`${outside}/`) || probePaths.includes(p))
        .filter((p) => p.split("/").length > 2)
        .sort((a, b) => b.length - a.length);
      for (const p of added) rmSync(p, { recursive: true, force: true });
    }
    ensureKubeletExtras();
    for (const c of fixtureCalls) await send(c);
  };

  const record = (category: Category | "race", field: "tried" | "wrongCodes" | "leaks", n = 1): void => {
    const entry = (figures.byCategory[category] ??= { tried: 0, wrongCodes: 0, leaks: 0 });
    entry[field] += n;
    figures[field] += n;
  };

  const probe = async (after: string): Promise<void> => {
    const answer = await send({ service: "identity", method: "Probe", request: {} });
    const ready = (answer.response as { ready?: { value?: boolean } | null } | undefined)?.ready?.value;
    if (answer.code !== status.OK || ready !== true) {
      figures.crashes++;
      figures.crashed.push(
        `Probe after ${after}: ${status[answer.code] ?? answer.code} ready=${ready} ${answer.details}`,
      );
    }
  };

  /** Checks one answer; an accepted case's cleanup runs here. True when it was OK where a refusal was due. */
  const evaluate = async (c: HostileCase, answer: Answer): Promise<boolean> => {
    record(c.category, "tried");
    if (answer.code === NO_ANSWER) {
      figures.crashes++;
      figures.crashed.push(`${c.label}: no answer within ${CALL_TIMEOUT_MS / 1000} s`);
    }
    const wrong = (why: string) => {
      record(c.category, "wrongCodes");
      const line = `${c.label}: ${why}`;
      figures.mismatches.push(line);
      console.log(`      wrong: ${line}`);
    };
    if (answer.code !== c.expect) {
      wrong(
        `expected ${status[c.expect]}, got ${status[answer.code] ?? answer.code}: ${show(answer.details, 200)}`,
      );
    }
    if (answer.code === status.OK && c.readonlyAt) {
      const m = parseMountInfo(readFileSync("/proc/self/mountinfo", "utf8")).filter(
        (e) => e.mountPoint === c.readonlyAt,
      );
      if (m.length === 0 || m.some((e) => !e.options.includes("ro")))
        wrong(`answered OK but ${c.readonlyAt} is not mounted read-only`);
    }
    const id = resultId(answer);
    if (answer.code === status.OK && c.expect === status.OK) {
      for (const cleanup of c.cleanup ?? []) {
        const undone = await send(id ? substitute(cleanup, id) : cleanup);
        if (undone.code !== status.OK)
          figures.leaked.push(
            `${c.label}: cleanup ${cleanup.method} failed: ${status[undone.code]} ${undone.details}`,
          );
      }
    }
    return answer.code === status.OK && c.expect !== status.OK;
  };

  /** Runs a wave of cases at once and compares the in-process state with `baseline` afterwards. */
  const runWave = async (wave: HostileCase[], baseline: Observed): Promise<Observed> => {
    const answers = await Promise.all(wave.map((c) => send(c)));
    let unexpectedOk = false;
    for (const [i, c] of wave.entries())
      unexpectedOk = (await evaluate(c, answers[i] as Answer)) || unexpectedOk;
    const changes = observedDiff(baseline, cheap());
    if (changes.length === 0) return baseline;
    // An answer of OK where a refusal was due is a wrong code already; what it made is only undone.
    if (!unexpectedOk) {
      const labels = wave.map((c) => c.label).join(" | ");
      record(wave[0]?.category ?? "race", "leaks", changes.length);
      for (const change of changes) {
        figures.leaked.push(`${labels}: ${change}`);
        console.log(`      leak: ${labels}: ${change}`);
      }
    }
    await repair(baseline);
    return cheap();
  };

  /** Waves in case order: accepted cases alone, refusals up to WAVE at once with disjoint lock keys. */
  const planWaves = (list: HostileCase[]): HostileCase[][] => {
    const waves: HostileCase[][] = [];
    let current: HostileCase[] = [];
    let held = new Set<string>();
    const tables: Record<
      string,
      Record<string, ((request: never) => Array<{ kind: string; id: string }>) | undefined>
    > = {
      controller: CONTROLLER_LOCK_KEYS,
      node: NODE_LOCK_KEYS,
      identity: {},
    };
    const keysOf = (c: HostileCase): string[] =>
      (tables[c.service]?.[c.method]?.(c.request as never) ?? []).map((k) => `${k.kind} ${k.id}`);
    const flush = () => {
      if (current.length) waves.push(current);
      current = [];
      held = new Set();
    };
    for (const c of list) {
      if (c.expect === status.OK) {
        flush();
        waves.push([c]);
        continue;
      }
      const keys = keysOf(c);
      if (current.length >= WAVE || keys.some((k) => held.has(k))) flush();
      current.push(c);
      for (const k of keys) held.add(k);
    }
    flush();
    return waves;
  };

  const runCategory = async (category: Category): Promise<void> => {
    const began = Date.now();
    const mine = cases.filter((c) => c.category === category);
    assert.ok(mine.length > 0, `no ${category} cases`);
    const before = { ...figures.byCategory[category] };
    const batches: HostileCase[][][] = [[]];
    for (const wave of planWaves(mine)) {
      const last = batches[batches.length - 1] as HostileCase[][];
      if (last.reduce((n, w) => n + w.length, 0) + wave.length > BATCH) batches.push([wave]);
      else last.push(wave);
    }
    for (const batchWaves of batches) {
      const batch = batchWaves.flat();
      const batchStart = await full();
      let baseline: Observed = batchStart;
      for (const wave of batchWaves)
        baseline = { ...(await runWave(wave, baseline)), dm: batchStart.dm, files: batchStart.files };
      const end = await full();
      const changes = diff(batchStart.dm ?? [], end.dm ?? [])
        .map((l) => `${l.slice(0, 2)}dm ${l.slice(2)}`)
        .concat(
          diff(batchStart.files ?? [], end.files ?? []).map((l) => `${l.slice(0, 2)}file ${l.slice(2)}`),
        );
      if (changes.length) {
        record(category, "leaks", changes.length);
        const labels = `${batch[0]?.label} .. ${batch[batch.length - 1]?.label}`;
        for (const change of changes) {
          figures.leaked.push(`batch ${labels}: ${change}`);
          console.log(`      leak in batch ${labels}: ${change}`);
        }
        await repair(batchStart);
      }
      await probe(`batch ending with ${batch[batch.length - 1]?.label}`);
    }
    const got = figures.byCategory[category] ?? { tried: 0, wrongCodes: 0, leaks: 0 };
    console.log(
      `      ${category}: ${got.tried - (before.tried ?? 0)} requests, ${got.wrongCodes - (before.wrongCodes ?? 0)} wrong codes, ${got.leaks - (before.leaks ?? 0)} leaks, ${((Date.now() - began) / 1000).toFixed(1)} s`,
    );
    assert.equal(got.wrongCodes, 0, `${category}: wrong codes (printed above)`);
    assert.equal(got.leaks, 0, `${category}: leaks (printed above)`);
  };

  before(async () => {
    startedAt = Date.now();
    process.on("unhandledRejection", onRejection);
    process.on("uncaughtException", onException);
    await removeAllDmDevices();
    await zeroHead(E2E_META_DEV);
    const started = await startTestDriver({ dir, nodeId: NODE });
    driver = started.driver;
    csi = started.csi;

    const create = async (name: string, sizeBytes: number, access: "mount" | "block") => {
      const answer = await send({
        service: "controller",
        method: "CreateVolume",
        request: fixtureVolumeRequest(name, sizeBytes, access),
      });
      assert.equal(answer.code, status.OK, `fixture ${name}: ${answer.details}`);
      return { id: resultId(answer) ?? "", name, sizeBytes };
    };
    const mount = await create("hostile-fixture-mount", 64 * MiB, "mount");
    const block = await create("hostile-fixture-block", 16 * MiB, "block");
    const idle = await create("hostile-fixture-idle", 32 * MiB, "mount");
    const doomedVolume = await create("hostile-fixture-doomed", 8 * MiB, "mount");
    const snap = async (name: string) =>
      (await csi.controller("CreateSnapshot", { name, source_volume_id: idle.id })).snapshot?.snapshot_id ??
      "";
    const snapshot = {
      id: await snap("hostile-fixture-snap"),
      name: "hostile-fixture-snap",
      sourceId: idle.id,
    };
    const doomedSnapshot = {
      id: await snap("hostile-fixture-doomed-snap"),
      name: "hostile-fixture-doomed-snap",
    };
    ctx = {
      nodeId: NODE,
      otherNode: OTHER_NODE,
      kubeletDir: kubelet,
      outsideDir: outside,
      blockBytes: driver.engine.require().blockBytes("default"),
      fixtures: {
        mount: {
          ...mount,
          stage: join(plugin, "fixture-mount/globalmount"),
          target: join(kubelet, "pods/fixture/volumes/kubernetes.io~csi/mount/mount"),
        },
        block: {
          ...block,
          stage: join(plugin, "fixture-block/globalmount"),
          target: join(kubelet, "plugins/kubernetes.io/csi/volumeDevices/publish/fixture-block/pod"),
        },
        idle,
        snapshot,
        doomedVolume,
        doomedSnapshot,
      },
      paths: {
        linkToOutside: join(kubelet, "pods/escape-dir"),
        linkToEtc: join(kubelet, "pods/escape-etc"),
        targetLink: join(kubelet, "pods/link/volumes/kubernetes.io~csi/pv/mount"),
        danglingTarget: join(kubelet, "pods/dangling/volumes/kubernetes.io~csi/pv/mount"),
        danglingDir: join(kubelet, "pods/dangling-dir"),
        loop: join(kubelet, "pods/loop"),
        kubeletFile: join(kubelet, "config.yaml"),
        busyDir: join(kubelet, "pods/busy/volumes/kubernetes.io~csi/pv/mount"),
      },
    };
    const f = ctx.fixtures;
    const mountCap = {
      access_mode: { mode: "SINGLE_NODE_WRITER" },
      mount: { fs_type: "ext4", mount_flags: [] },
    };
    const blockCap = { access_mode: { mode: "SINGLE_NODE_WRITER" }, block: {} };
    fixtureCalls = [
      {
        service: "node",
        method: "NodeStageVolume",
        request: { volume_id: f.mount.id, staging_target_path: f.mount.stage, volume_capability: mountCap },
      },
      {
        service: "node",
        method: "NodePublishVolume",
        request: {
          volume_id: f.mount.id,
          staging_target_path: f.mount.stage,
          target_path: f.mount.target,
          volume_capability: mountCap,
        },
      },
      {
        service: "node",
        method: "NodeStageVolume",
        request: { volume_id: f.block.id, staging_target_path: f.block.stage, volume_capability: blockCap },
      },
      {
        service: "node",
        method: "NodePublishVolume",
        request: {
          volume_id: f.block.id,
          staging_target_path: f.block.stage,
          target_path: f.block.target,
          volume_capability: blockCap,
        },
      },
    ];
    // What kubelet does before calling the driver: the staging directories and the targets' parents.
    for (const d of [f.mount.stage, f.block.stage, join(f.mount.target, ".."), join(f.block.target, "..")])
      mkdirSync(d, { recursive: true });
    for (const c of fixtureCalls) {
      const answer = await send(c);
      assert.equal(answer.code, status.OK, `fixture ${c.method}: ${answer.details}`);
    }
    writeFileSync(join(f.mount.target, "hello.txt"), "written before the hostile requests\n");
    await sh("sync", []);
    ensureKubeletExtras();

    cases = hostileCases(ctx);
    races = hostileRaces(ctx);
    for (const d of coDirectories(ctx, cases, races)) mkdirSync(d, { recursive: true });
    const pathFields = ["staging_target_path", "target_path", "volume_path"];
    probePaths = [
      ...new Set(
        cases.flatMap((c) =>
          pathFields
            .map((field) => c.request[field])
            .filter((p): p is string => typeof p === "string" && p.startsWith("/") && !p.includes("\u0000"))
            .filter((p) => !p.startsWith(`${dir}/`) && !p.startsWith(`${outside}/`)),
        ),
      ),
    ];
    probePaths.push("/etc/hostile", join(outside, "not-there"), join(outside, "missing-dir"));
    console.log(
      `      ${cases.length} cases and ${races.reduce((n, r) => n + r.calls.length, 0)} racing calls`,
    );
  });

  after(async () => {
    process.removeListener("unhandledRejection", onRejection);
    process.removeListener("uncaughtException", onException);
    if (csi && ctx) {
      const f = ctx.fixtures;
      for (const v of [f.mount, f.block])
        await send({
          service: "node",
          method: "NodeUnpublishVolume",
          request: { volume_id: v.id, target_path: v.target },
        });
      for (const v of [f.mount, f.block])
        await send({
          service: "node",
          method: "NodeUnstageVolume",
          request: { volume_id: v.id, staging_target_path: v.stage },
        });
      for (const v of [f.mount, f.block, f.idle, f.doomedVolume])
        await send({ service: "controller", method: "DeleteVolume", request: { volume_id: v.id } });
      for (const s of [f.snapshot, f.doomedSnapshot])
        await send({ service: "controller", method: "DeleteSnapshot", request: { snapshot_id: s.id } });
    }
    csi?.close();
    await driver?.server.shutdown();
    await removeAllDmDevices().catch(() => undefined);
    if (!mountLines().some((m) => m.startsWith(dir))) {
      rmSync(dir, { recursive: true, force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });

  for (const category of [
    "missing-field",
    "size",
    "name",
    "id",
    "path",
    "mount-flag",
    "access-mode",
    "parameters",
    "field-limit",
    "duplicate",
    "unimplemented",
  ] as const) {
    it(`${category}: every request gets the spec's code and a refusal leaves nothing`, async () => {
      await runCategory(category);
    });
  }

  it("racing identical calls: ABORTED or one result, one device, one mount", async () => {
    const racesStart = await full();
    for (const race of races) {
      const baseline = cheap();
      const answers = await Promise.all(race.calls.map((c) => send(c)));
      const category = "race";
      record(category, "tried", answers.length);
      const wrong = (why: string) => {
        record(category, "wrongCodes");
        figures.mismatches.push(`${race.label}: ${why}`);
        console.log(`      wrong: ${race.label}: ${why}`);
      };
      for (const a of answers) {
        if (a.code === NO_ANSWER) {
          figures.crashes++;
          figures.crashed.push(`${race.label}: a call never answered`);
        }
        if (!race.allowed.includes(a.code))
          wrong(
            `got ${status[a.code] ?? a.code} (${show(a.details, 160)}), allowed ${race.allowed.map((c) => status[c]).join("|")}`,
          );
      }
      const ok = answers.filter((a) => a.code === status.OK);
      if (ok.length === 0) wrong("no call succeeded");
      const ids = [...new Set(ok.map(resultId))];
      if (race.sameResult && ids.length !== 1)
        wrong(`successes name ${ids.length} different results: ${ids.join(", ")}`);
      const mid = cheap();
      const newDevices = diff(baseline.devices, mid.devices).filter((l) => l.startsWith("+ "));
      if (race.newDevices !== undefined && newDevices.length !== race.newDevices)
        wrong(`${newDevices.length} devices appeared, expected ${race.newDevices}: ${newDevices.join("; ")}`);
      if (race.mountAt) {
        const n = mid.mounts.filter((m) => m.startsWith(`${race.mountAt} `)).length;
        if (n !== 1) wrong(`${n} mounts at ${race.mountAt}, expected 1`);
      }
      const id = ids[0];
      for (const cleanup of race.cleanup ?? []) {
        const undone = await send(id ? substitute(cleanup, id) : cleanup);
        if (undone.code !== status.OK)
          figures.leaked.push(`${race.label}: cleanup ${cleanup.method} failed: ${undone.details}`);
      }
      const end = cheap();
      const gone = new Set((race.deletes ?? []).map((d) => d.split("@")[0] as string));
      const changes = observedDiff(baseline, end).filter(
        (line) => !(line.startsWith("- device ") && gone.has(line.slice(9).split(" ")[0] as string)),
      );
      if (changes.length) {
        record(category, "leaks", changes.length);
        for (const change of changes) {
          figures.leaked.push(`${race.label}: ${change}`);
          console.log(`      leak: ${race.label}: ${change}`);
        }
      }
      await probe(race.label);
    }
    const racesEnd = await full();
    const beyond = observedDiff(
      { ...racesStart, devices: [], nodePaths: [], mounts: [] },
      { ...racesEnd, devices: [], nodePaths: [], mounts: [] },
    );
    if (beyond.length) {
      record("race", "leaks", beyond.length);
      for (const change of beyond) {
        figures.leaked.push(`races: ${change}`);
        console.log(`      leak in the races: ${change}`);
      }
    }
    const got = figures.byCategory.race ?? { tried: 0, wrongCodes: 0, leaks: 0 };
    console.log(`      race: ${got.tried} requests, ${got.wrongCodes} wrong, ${got.leaks} leaks`);
    assert.equal(got.wrongCodes, 0, "races: wrong outcomes (printed above)");
    assert.equal(got.leaks, 0, "races: leaks (printed above)");
  });

  it("survived it all: the fixtures' data is intact and the figures are zero", async () => {
    figures.durationMs = Date.now() - startedAt;
    const f = ctx.fixtures;
    assert.equal(
      readFileSync(join(f.mount.target, "hello.txt"), "utf8"),
      "written before the hostile requests\n",
      "the published volume still serves its data",
    );
    assert.equal(readFileSync(join(kubelet, "config.yaml"), "utf8"), "kind: KubeletConfiguration\n");
    await probe("the whole run");
    const resultDir = vmResultDir();
    if (resultDir !== null) {
      mkdirSync(resultDir, { recursive: true });
      writeFileSync(join(resultDir, "hostile-input.json"), JSON.stringify(figures, null, 2) + "\n");
    }
    console.log(
      `hostile-input: tried ${figures.tried}, crashes ${figures.crashes}, wrong codes ${figures.wrongCodes}, leaks ${figures.leaks}`,
    );
    assert.deepEqual(figures.crashed, [], "crashes");
    assert.equal(figures.crashes, 0, "crashes");
    assert.equal(figures.wrongCodes, 0, "wrong codes");
    assert.equal(figures.leaks, 0, "leaks");
    assert.ok(figures.tried >= 300, `only ${figures.tried} requests were tried`);
  });
});

function lstatSafe(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
