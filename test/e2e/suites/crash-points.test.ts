/**
 * Crash at every step (runs inside the VM). For each CSI call and each named crash point it passes
 * through, the real driver binary is started with THINPOOL_CSI_CRASH_AT=<point>, the call is made, and the
 * process must die by SIGKILL at that point. The driver is then started normally (start-up
 * reconciliation), the same request is retried and must succeed, and a checker compares store and kernel:
 * no device left suspended, no leaked thin id, no dm device the store does not know, no row half-done or
 * pointing at nothing, and the data written and synced before the kill reads back intact.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa, type ExecaChildProcess } from "execa";
import { CsiClient } from "../../../src/csi/client.js";
import { CRASH_POINTS, type CrashPointName } from "../../../src/util/crash-point.js";
import {
  E2E_DATA_DEV,
  E2E_META_DEV,
  env,
  removeAllDmDevices,
  sh,
  sha256File,
  zeroHead,
} from "../support/vm-env.js";
import { storeKernelProblems } from "../support/consistency.js";

const MiB = 1024 * 1024;
const mountCap = {
  access_mode: { mode: "SINGLE_NODE_WRITER" as const },
  mount: { fs_type: "ext4", mount_flags: [] },
};

interface Scenario {
  rpc: string;
  point: CrashPointName;
  /** Prepares what the call needs, with a normally running driver. */
  setup?: (csi: CsiClient) => Promise<void>;
  /** The call that is killed, then retried. */
  call: (csi: CsiClient) => Promise<unknown>;
  /** Flags of the driver that is killed. */
  crashFlags?: string[];
  /** The point is passed by the driver's own start-up work (topping up spare ids), before any call. */
  diesAtStart?: boolean;
}

describe("crash at every step of every operation", function () {
  this.timeout(1_800_000);
  const dir = mkdtempSync(join(tmpdir(), "crash-e2e-"));
  const kubelet = join(dir, "kubelet");
  const socket = join(dir, "csi.sock");
  const statePath = join(dir, "state", "state.db");
  const stage = (name: string) =>
    join(kubelet, "plugins/kubernetes.io/csi/thinpool.csi.dev", name, "globalmount");
  let baseVolume = "";
  let baseSnapshot = "";
  let baseSum = "";
  const ids = new Map<string, string>();

  const startDriver = async (
    crashAt?: CrashPointName,
    flags: string[] = [],
    waitForReady = true,
  ): Promise<{ proc: ExecaChildProcess; csi: CsiClient }> => {
    const proc = execa(
      "node",
      [
        "dist/src/cli/main.js",
        "serve",
        `--endpoint=unix://${socket}`,
        `--state-dir=${join(dir, "state")}`,
        `--kubelet-dir=${kubelet}`,
        `--pool=name=default,type=devices,data=${E2E_DATA_DEV},metadata=${E2E_META_DEV}`,
        "--metrics-address=",
        "--log-level=info",
        ...flags,
      ],
      {
        env: { ...env, NODE_NAME: "node-a", ...(crashAt ? { THINPOOL_CSI_CRASH_AT: crashAt } : {}) },
        reject: false,
      },
    );
    const csi = new CsiClient(socket);
    if (!waitForReady) return { proc, csi };
    for (const deadline = Date.now() + 120_000; ;) {
      if (proc.exitCode !== null) throw new Error(`driver exited at start: ${(await proc).stderr}`);
      const ready = await csi.identity("Probe", {}, 2000).then(
        (p) => p.ready?.value === true,
        () => false,
      );
      if (ready) return { proc, csi };
      if (Date.now() > deadline) throw new Error("driver did not become ready");
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  const stopDriver = async (d: { proc: ExecaChildProcess; csi: CsiClient }): Promise<void> => {
    d.csi.close();
    d.proc.kill("SIGTERM", { forceKillAfterTimeout: false });
    const result = await d.proc;
    assert.equal(result.exitCode, 0, `graceful stop: ${result.stderr}`);
  };

  /** Store and kernel agree; nothing half-done; the base data is intact. Returns what was found wrong. */
  const check = async (): Promise<string[]> => {
    const problems = await storeKernelProblems({ statePath, pool: "default", metadataDevice: E2E_META_DEV });
    if ((await sha256File(join(stage("base"), "data"))) !== baseSum)
      problems.push("base volume data changed");
    return problems;
  };

  const create =
    (name: string, extra: Record<string, unknown> = {}) =>
    async (csi: CsiClient) => {
      const res = await csi.controller("CreateVolume", {
        name,
        capacity_range: { required_bytes: 16 * MiB },
        volume_capabilities: [mountCap],
        ...extra,
      });
      ids.set(name, res.volume?.volume_id ?? "");
      return res;
    };
  const stageCall = (name: string) => (csi: CsiClient) =>
    csi.node("NodeStageVolume", {
      volume_id: ids.get(name) ?? "",
      staging_target_path: stage(name),
      volume_capability: mountCap,
    });

  const scenarios: Scenario[] = [];
  // Without spare ids, so that CreateVolume itself messages the pool.
  for (const point of ["create.intent-committed", "create.kernel-created", "create.txid-advanced"] as const) {
    scenarios.push({
      rpc: "CreateVolume",
      point,
      call: create(`cv-${point}`),
      crashFlags: ["--spare-thin-ids=0"],
    });
  }
  // A driver asked for more spares than it has makes one at start and is killed there; the retried
  // CreateVolume takes a spare.
  for (const point of ["spare.intent-committed", "spare.kernel-created"] as const) {
    scenarios.push({
      rpc: "spare thin id top-up, then CreateVolume",
      point,
      call: create(`sp-${point}`),
      crashFlags: ["--spare-thin-ids=64"],
      diesAtStart: true,
    });
  }
  const snapshotPoints = [
    "snapshot.intent-committed",
    "snapshot.origin-suspended",
    "snapshot.kernel-created",
    "snapshot.origin-resumed",
    "create.txid-advanced",
  ] as const;
  for (const point of snapshotPoints) {
    // The base volume is staged (its dm device live, ext4 mounted): the origin really is suspended.
    scenarios.push({
      rpc: "CreateSnapshot",
      point,
      call: (csi) =>
        csi.controller("CreateSnapshot", { name: `snap-${point}`, source_volume_id: baseVolume }),
    });
    scenarios.push({
      rpc: "CreateVolume (restore)",
      point,
      call: (csi) =>
        create(`rs-${point}`, {
          capacity_range: { required_bytes: 32 * MiB },
          volume_content_source: { snapshot: { snapshot_id: baseSnapshot } },
        })(csi),
    });
    scenarios.push({
      rpc: "CreateVolume (clone)",
      point,
      call: (csi) =>
        create(`cl-${point}`, { volume_content_source: { volume: { volume_id: baseVolume } } })(csi),
    });
  }
  for (const point of ["delete.intent-committed", "delete.deactivated", "delete.kernel-deleted"] as const) {
    scenarios.push({
      rpc: "DeleteVolume",
      point,
      setup: async (csi) => void (await create(`dv-${point}`)(csi)),
      call: (csi) => csi.controller("DeleteVolume", { volume_id: ids.get(`dv-${point}`) ?? "" }),
    });
    scenarios.push({
      rpc: "DeleteSnapshot",
      point,
      setup: async (csi) => {
        const s = await csi.controller("CreateSnapshot", {
          name: `ds-${point}`,
          source_volume_id: baseVolume,
        });
        ids.set(`ds-${point}`, s.snapshot?.snapshot_id ?? "");
      },
      call: (csi) => csi.controller("DeleteSnapshot", { snapshot_id: ids.get(`ds-${point}`) ?? "" }),
    });
  }
  for (const point of [
    "activate.intent-committed",
    "activate.kernel-created",
    "stage.activated",
    "stage.formatted",
    "stage.mounted",
  ] as const) {
    scenarios.push({
      rpc: "NodeStageVolume",
      point,
      setup: async (csi) => void (await create(`ns-${point}`)(csi)),
      call: stageCall(`ns-${point}`),
    });
  }
  for (const point of ["unstage.unmounted", "deactivate.intent-committed"] as const) {
    scenarios.push({
      rpc: "NodeUnstageVolume",
      point,
      setup: async (csi) => {
        await create(`nu-${point}`)(csi);
        await stageCall(`nu-${point}`)(csi);
      },
      call: (csi) =>
        csi.node("NodeUnstageVolume", {
          volume_id: ids.get(`nu-${point}`) ?? "",
          staging_target_path: stage(`nu-${point}`),
        }),
    });
  }
  for (const point of ["resize.intent-committed", "resize.table-reloaded", "expand.device-grown"] as const) {
    scenarios.push({
      rpc: "NodeExpandVolume",
      point,
      setup: async (csi) => {
        await create(`ne-${point}`)(csi);
        await stageCall(`ne-${point}`)(csi);
      },
      call: (csi) =>
        csi.node("NodeExpandVolume", {
          volume_id: ids.get(`ne-${point}`) ?? "",
          volume_path: stage(`ne-${point}`),
          capacity_range: { required_bytes: 48 * MiB },
        }),
    });
  }

  before(async () => {
    await removeAllDmDevices();
    await zeroHead(E2E_META_DEV);
    mkdirSync(kubelet, { recursive: true });
  });

  after(async () => {
    for (const line of (await sh("sh", ["-c", `grep ' ${dir}' /proc/self/mounts | cut -d' ' -f2 || true`]))
      .split("\n")
      .reverse()) {
      if (line) await sh("umount", ["-l", line]).catch(() => undefined);
    }
  });

  it("covers every crash point the product defines", () => {
    const covered = new Set(scenarios.map((s) => s.point));
    assert.deepEqual(
      [...CRASH_POINTS].filter((p) => !covered.has(p)),
      [],
    );
  });

  it("survives a SIGKILL at every point: the retried request succeeds and store and kernel agree", async () => {
    let driver = await startDriver();
    await create("base")(driver.csi);
    baseVolume = ids.get("base") ?? "";
    await stageCall("base")(driver.csi);
    writeFileSync(join(stage("base"), "data"), Buffer.alloc(2 * MiB, 7));
    await sh("sync", []);
    baseSum = await sha256File(join(stage("base"), "data"));
    baseSnapshot =
      (await driver.csi.controller("CreateSnapshot", { name: "snap-base", source_volume_id: baseVolume }))
        .snapshot?.snapshot_id ?? "";

    const figures = { killPoints: new Set<string>(), scenarios: 0, retriedOk: 0, problems: [] as string[] };
    for (const scenario of scenarios) {
      const label = `${scenario.rpc} @ ${scenario.point}`;
      process.stdout.write(`      ${label}\n`);
      await scenario.setup?.(driver.csi);
      await stopDriver(driver);

      const crashing = await startDriver(scenario.point, scenario.crashFlags, !scenario.diesAtStart);
      if (!scenario.diesAtStart)
        await assert.rejects(scenario.call(crashing.csi), `${label}: the call must not succeed`);
      const died = await crashing.proc;
      crashing.csi.close();
      assert.equal(
        died.signal,
        "SIGKILL",
        `${label}: the process must die at the point (exit ${died.exitCode}, ${died.stderr})`,
      );
      figures.killPoints.add(scenario.point);

      driver = await startDriver();
      await scenario.call(driver.csi); // the same request, retried
      figures.retriedOk++;
      figures.scenarios++;
      const problems = await check();
      figures.problems.push(...problems.map((p) => `${label}: ${p}`));
    }
    await stopDriver(driver);

    const summary =
      `crash-points: ${figures.killPoints.size} kill points, ${figures.scenarios} kills, ` +
      `${figures.retriedOk} retried requests succeeded, ${figures.problems.length} invariant violations`;
    process.stdout.write(`      ${summary}\n`);
    const resultDir = process.env.THINPOOL_VM_RESULT_DIR;
    if (resultDir && existsSync(resultDir)) {
      writeFileSync(
        join(resultDir, "crash-points.json"),
        JSON.stringify({ ...figures, killPoints: [...figures.killPoints] }, null, 2),
      );
    }
    assert.deepEqual(figures.problems, []);
  });
});
