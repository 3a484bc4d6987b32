/** Starts, queries and stops the benchmark's driver process (bench/driver-process.ts) from inside the VM. */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { CsiClient } from "../src/csi/client.js";
import { repoPath } from "../test/support/repo.js";
import type { DriverRequest, DriverStats } from "./driver-protocol.js";

const ENTRY = fileURLToPath(new URL("./driver-process.js", import.meta.url));

/** The Node flags the image's ENTRYPOINT (Dockerfile, exec form) gives the driver. */
export function imageNodeFlags(dockerfile: string): string[] {
  const entrypoint = /^ENTRYPOINT (\[.*\])\s*$/m.exec(dockerfile)?.[1];
  if (!entrypoint) throw new Error("the Dockerfile has no ENTRYPOINT in exec form");
  const argv = JSON.parse(entrypoint) as string[];
  return argv.slice(argv.indexOf("node") + 1).filter((arg) => arg.startsWith("--"));
}

export interface DriverSetup {
  socket: string;
  stateDir: string;
  kubeletDir: string;
  /** The --pool flag value. */
  pool: string;
  kubeconfig: string;
}

export class BenchDriver {
  private stderr = "";

  private constructor(
    private readonly child: ChildProcess,
    readonly csi: CsiClient,
    /** Process spawn until Probe answered ready. */
    readonly startToReadyMs: number,
  ) {
    child.stderr?.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-20_000);
    });
  }

  static async start(setup: DriverSetup): Promise<BenchDriver> {
    const spawnedAt = performance.now();
    const child = spawn(
      process.execPath,
      [
        // As the image runs it: the same Node flags (a smaller young generation).
        ...imageNodeFlags(readFileSync(repoPath("Dockerfile"), "utf8")),
        ENTRY,
        `--endpoint=unix://${setup.socket}`,
        "--node-id=bench-node",
        `--state-dir=${setup.stateDir}`,
        `--kubelet-dir=${setup.kubeletDir}`,
        `--pool=${setup.pool}`,
        // As deployed: metrics served, a log line per call (to /dev/null here), and a kubeconfig found, so
        // the driver is set up to raise Node Events (bench/vm-bench.ts writes one pointing nowhere).
        "--metrics-address=127.0.0.1:9810",
        // Thousands of small volumes on a few GiB: the benchmark is about speed, not the capacity policy.
        "--over-provisioning-ratio=1000",
      ],
      {
        stdio: ["ignore", "ignore", "pipe", "ipc"],
        env: { ...process.env, LC_ALL: "C", KUBECONFIG: setup.kubeconfig },
      },
    );
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const csi = new CsiClient(setup.socket);
    for (const deadline = Date.now() + 600_000; ;) {
      if (child.exitCode !== null) throw new Error(`driver exited at start (${child.exitCode}): ${stderr}`);
      const ready = await csi.identity("Probe", {}, 2000).then(
        (p) => p.ready?.value === true,
        () => false,
      );
      if (ready) return new BenchDriver(child, csi, performance.now() - spawnedAt);
      if (Date.now() > deadline) throw new Error(`driver did not become ready: ${stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  async stats(type: DriverRequest["type"] = "stats"): Promise<DriverStats> {
    const answer = once(this.child, "message") as Promise<[DriverStats]>;
    this.child.send({ type } satisfies DriverRequest);
    return (await answer)[0];
  }

  async stop(): Promise<void> {
    this.csi.close();
    const exited = once(this.child, "exit");
    this.child.kill("SIGTERM");
    const [code] = (await exited) as [number | null];
    if (code !== 0) throw new Error(`driver stopped with ${code}: ${this.stderr}`);
  }
}
