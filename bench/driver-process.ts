/**
 * The driver process the benchmark talks to: exactly `thinpool-csi serve` (same config parser, same
 * startDriver, same engine wiring), plus an IPC channel to the parent that answers "what did you do":
 * processes spawned, SQLite statements run, the kernel commands with their timestamps, resident memory,
 * the last start-up reconciliation. The CSI calls themselves go over the unix socket like the sidecars'.
 *
 * Instrumentation cost: one array push per spawned command and per GC pause, one counter per SQLite
 * statement.
 */
import Database from "better-sqlite3";
import { readFileSync } from "node:fs";
import { PerformanceObserver, performance } from "node:perf_hooks";
import type { CommandRunner } from "../src/thinpool/command.js";
import { parseServeArgs } from "../src/server/config.js";
import { startDriver, type DriverFactories } from "../src/server/driver.js";
import { EngineHost, thinpoolDriverFactories } from "../src/server/engine-wiring.js";
import type { CommandTiming, DriverRequest, DriverStats } from "./driver-protocol.js";

/** Milliseconds since this process started, when every import above had been evaluated. */
const importsDoneMs = performance.now();
const epochMs = (): number => performance.timeOrigin + performance.now();

let statements = 0;
/** Counts every statement better-sqlite3 runs (one prototype shared by all statements). */
function countStatements(): void {
  const probe = new Database(":memory:");
  const proto = Object.getPrototypeOf(probe.prepare("SELECT 1")) as Record<string, unknown>;
  probe.close();
  for (const method of ["run", "get", "all", "iterate"]) {
    const original = proto[method] as (...args: unknown[]) => unknown;
    proto[method] = function (this: unknown, ...args: unknown[]) {
      statements++;
      return original.apply(this, args);
    };
  }
}

const commands: CommandTiming[] = [];
function timeCommands(runner: CommandRunner): void {
  const run = runner.run.bind(runner);
  runner.run = async (file, args, options) => {
    const start = epochMs();
    try {
      return await run(file, args, options);
    } finally {
      commands.push({ file, args: args.slice(0, 2), startMs: start, endMs: epochMs() });
    }
  };
}

const gcPauses: DriverStats["gcPauses"] = [];
function recordGcPauses(): void {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gcPauses.push({ startMs: performance.timeOrigin + entry.startTime, durationMs: entry.duration });
    }
  }).observe({ entryTypes: ["gc"] });
}

async function main(): Promise<void> {
  countStatements();
  recordGcPauses();
  const { config } = parseServeArgs(process.argv.slice(2), { env: process.env });
  if (!config) throw new Error("driver-process: no configuration (use the serve flags)");
  let host: EngineHost | undefined;
  const factories: DriverFactories<EngineHost> = {
    ...thinpoolDriverFactories,
    createEngine: (context) => {
      host = new EngineHost(context);
      timeCommands(host.runner);
      return host;
    },
  };
  await startDriver(config, factories);

  process.on("message", (message: DriverRequest) => {
    const memory = process.memoryUsage();
    const cpu = process.cpuUsage();
    const stats: DriverStats = {
      spawned: host?.runner.spawned ?? 0,
      statements,
      cpuMs: (cpu.user + cpu.system) / 1000,
      childrenCpuMs: childrenCpuMs(),
      rssBytes: memory.rss,
      heapUsedBytes: memory.heapUsed,
      importsDoneMs,
      reconcile: host?.engine?.lastReconcile ?? null,
      commands: [...commands],
      gcPauses: [...gcPauses],
    };
    if (message.type === "reset") {
      commands.length = 0;
      gcPauses.length = 0;
    }
    process.send?.(stats);
  });
}

/** Reaped children's user + system time, from /proc/self/stat (cutime, cstime; in USER_HZ, 100 on Linux). */
function childrenCpuMs(): number {
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1]?.split(" ") ?? [];
  return ((Number(fields[13]) + Number(fields[14])) * 1000) / 100;
}

main().catch((err: unknown) => {
  process.stderr.write(
    `driver-process: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
