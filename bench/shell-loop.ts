/**
 * The "by hand" side of every comparison: the same commands the driver runs, issued by one bash process
 * from a generated script. bash (not sh) because $EPOCHREALTIME gives microsecond timestamps without
 * spawning `date`, so nothing but the commands themselves falls inside a measured interval; one script
 * for the whole loop, so Node is not involved at all.
 */
import { execa } from "execa";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** One command: argv, no shell features. */
export type Argv = readonly string[];
/** One iteration: steps run one after another, each step one or more commands. */
export type Iteration = readonly (readonly Argv[])[];

const quote = (arg: string): string => `'${arg.replace(/'/g, `'\\''`)}'`;

/**
 * Runs the iterations in one bash process and returns, per iteration, the duration of each step in
 * milliseconds. A failing command fails the whole loop (set -e).
 */
export async function timedShellLoop(iterations: readonly Iteration[]): Promise<number[][]> {
  const lines = ["set -e"];
  for (const steps of iterations) {
    const parts = ["m0=$EPOCHREALTIME"];
    steps.forEach((commands, i) => {
      for (const argv of commands) parts.push(`${argv.map(quote).join(" ")} >/dev/null`);
      parts.push(`m${i + 1}=$EPOCHREALTIME`);
    });
    parts.push(`echo ${steps.map((_, i) => `$m${i}`).join(" ")} $m${steps.length}`);
    lines.push(parts.join("; "));
  }
  const dir = await mkdtemp(join(tmpdir(), "bench-loop-"));
  try {
    const script = join(dir, "loop.sh");
    await writeFile(script, `${lines.join("\n")}\n`);
    const { stdout } = await execa("bash", [script], { env: { LC_ALL: "C", DM_DISABLE_UDEV: "1" } });
    return stdout
      .trim()
      .split("\n")
      .filter(Boolean)
      .map((line) => {
        const marks = line.trim().split(/\s+/).map(micros);
        return marks.slice(1).map((mark, i) => Number(mark - (marks[i] as bigint)) / 1000);
      });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** "1712345678.123456" -> microseconds, exactly. */
function micros(stamp: string): bigint {
  const [seconds, fraction = ""] = stamp.split(".");
  return BigInt(seconds ?? "0") * 1_000_000n + BigInt(fraction.padEnd(6, "0").slice(0, 6));
}

/** Runs a command in the VM (setup and teardown, not measured). */
export async function run(file: string, args: readonly string[]): Promise<string> {
  const { stdout } = await execa(file, args, { env: { LC_ALL: "C", DM_DISABLE_UDEV: "1" } });
  return stdout;
}
