/**
 * The origin's I/O freeze as the kernel sees it, for the snapshot row: from the entry into `dm_suspend`
 * (where device-mapper freezes the filesystem and holds new I/O) to the return from `dm_resume` (I/O flows
 * again), recorded by kprobes in tracefs with the kernel's monotonic clock.
 *
 * The process-bracketed figure (start of the `dmsetup suspend` process to the end of the `dmsetup resume`
 * process) also counts the start-up of the first process and the exit of the last, while the origin's I/O
 * still flows; from Node each is longer than from bash. This probe times the same interval for the driver
 * and for the raw sequence without either. Bench-only: it needs root, tracefs and CONFIG_KPROBE_EVENTS.
 */
import { appendFile, readFile, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { run } from "./shell-loop.js";

const TRACEFS = "/sys/kernel/tracing";
const GROUP = "tpbench";
const PROBES = [
  `p:${GROUP}/suspend dm_suspend md=$arg1`,
  `p:${GROUP}/resume dm_resume md=$arg1`,
  `r:${GROUP}/resumed dm_resume ret=$retval`,
];

/** One trace line: `<comm>-<pid> [cpu] <flags> <seconds>: <event>: (<site>) [md=0x…|ret=0x…]`. */
const LINE =
  /-(\d+)\s+\[\d+\]\s+(?:\S+\s+)?(\d+)\.(\d+): (suspend|resume|resumed): .*?(?:(md|ret)=(0x[0-9a-f]+))?\s*$/;

export interface TraceEvent {
  pid: number;
  /** Microseconds on the trace clock. */
  micros: number;
  event: "suspend" | "resume" | "resumed";
  md?: string;
  /** dm_resume's return value (0 when the device resumed). */
  ret?: number;
}

export function parseTrace(text: string): TraceEvent[] {
  const events: TraceEvent[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const [, pid, seconds, fraction, event, field, value] = m;
    events.push({
      pid: Number(pid),
      micros: Number(seconds) * 1e6 + Number((fraction ?? "").padEnd(6, "0").slice(0, 6)),
      event: event as TraceEvent["event"],
      ...(field === "md" ? { md: value } : {}),
      ...(field === "ret" ? { ret: Number(BigInt.asIntN(64, BigInt(value as string))) } : {}),
    });
  }
  return events;
}

/**
 * Each device's suspended intervals in the events, in microseconds: from its `dm_suspend` entry to the
 * successful return of a `dm_resume` call on it (paired through the resuming process). A suspend never
 * resumed yields nothing; a failed resume leaves the device suspended, so its interval runs on.
 */
export function suspendedIntervals(events: readonly TraceEvent[]): [number, number][] {
  const suspendedAt = new Map<string, number>();
  const resuming = new Map<number, string>();
  const intervals: [number, number][] = [];
  for (const e of events) {
    if (e.event === "suspend" && e.md && !suspendedAt.has(e.md)) suspendedAt.set(e.md, e.micros);
    else if (e.event === "resume" && e.md) resuming.set(e.pid, e.md);
    else if (e.event === "resumed") {
      const md = resuming.get(e.pid);
      resuming.delete(e.pid);
      const start = md === undefined ? undefined : suspendedAt.get(md);
      if (md === undefined || start === undefined || (e.ret ?? 0) !== 0) continue;
      intervals.push([start, e.micros]);
      suspendedAt.delete(md);
    }
  }
  return intervals;
}

/**
 * How long (ms) some device was suspended: the union of the intervals, so a device suspended inside
 * another's freeze is not counted twice. On the VM's kernel and lvm2 each side suspends the origin alone.
 */
export function frozenMs(intervals: readonly [number, number][]): number {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let span: [number, number] | undefined;
  for (const [start, end] of sorted) {
    if (span && start <= span[1]) span[1] = Math.max(span[1], end);
    else {
      if (span) total += span[1] - span[0];
      span = [start, end];
    }
  }
  if (span) total += span[1] - span[0];
  return total / 1000;
}

export class KernelFreezeProbe {
  private constructor() {}

  /** Installs the probes, or returns null (with the reason logged) where the kernel cannot trace. */
  static async open(log: (message: string) => void): Promise<KernelFreezeProbe | null> {
    try {
      if (!existsSync(`${TRACEFS}/kprobe_events`)) await run("mount", ["-t", "tracefs", "nodev", TRACEFS]);
      await writeFile(`${TRACEFS}/trace_clock`, "mono");
      for (const probe of PROBES) await appendFile(`${TRACEFS}/kprobe_events`, `${probe}\n`);
      await writeFile(`${TRACEFS}/events/${GROUP}/enable`, "1");
      await writeFile(`${TRACEFS}/tracing_on`, "1");
      return new KernelFreezeProbe();
    } catch (err) {
      log(`kernel freeze probe unavailable, the freeze is timed from the processes only: ${String(err)}`);
      return null;
    }
  }

  /**
   * Runs `work` (one snapshot) and returns its result with the time the trace shows a device suspended
   * meanwhile, or undefined when it shows no complete suspend and resume.
   */
  async frozenDuring<T>(work: () => Promise<T>): Promise<[T, number | undefined]> {
    await writeFile(`${TRACEFS}/trace`, ""); // empties the buffer: only this work's events are read below
    const value = await work();
    const intervals = suspendedIntervals(parseTrace(await readFile(`${TRACEFS}/trace`, "utf8")));
    return [value, intervals.length > 0 ? frozenMs(intervals) : undefined];
  }

  async close(): Promise<void> {
    await writeFile(`${TRACEFS}/events/${GROUP}/enable`, "0");
    for (const probe of PROBES) {
      const name = (probe.split(" ")[0] as string).slice(2);
      await appendFile(`${TRACEFS}/kprobe_events`, `-:${name}\n`);
    }
  }
}
