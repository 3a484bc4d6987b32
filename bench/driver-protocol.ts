/** The IPC messages between the benchmark and its driver process (bench/driver-process.ts). */
import type { ReconcileReport } from "../src/thinpool/context.js";

/** Both answer with the counters and the command log; "reset" then clears the log (counters keep counting). */
export interface DriverRequest {
  type: "stats" | "reset";
}

export interface CommandTiming {
  file: string;
  /** The first two arguments, e.g. ["suspend", "tpcsi-v-..."]. */
  args: string[];
  startMs: number;
  endMs: number;
}

export interface DriverStats {
  spawned: number;
  statements: number;
  /** CPU time of the driver process itself (user + system), ms. */
  cpuMs: number;
  /** CPU time of the processes it started and has reaped (dmsetup, thin_ls, ...), ms. */
  childrenCpuMs: number;
  rssBytes: number;
  heapUsedBytes: number;
  /** Process start until every module was imported. */
  importsDoneMs: number;
  reconcile: ReconcileReport | null;
  commands: CommandTiming[];
  /** Garbage-collection pauses since the last reset (epoch ms), to tell GC from spawning in a freeze. */
  gcPauses: { startMs: number; durationMs: number }[];
}
