import { execFile, type ExecFileException } from "node:child_process";
import { CommandError, errnoFromMessage } from "./errors.js";

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  /** Extra environment for this call (merged over the runner's base environment). */
  env?: Record<string, string>;
}

/**
 * The seam between the engine and the host: every device-mapper and block-device command goes
 * through one runner, so unit tests can inject faults (EBUSY, a failing resume) that the kernel
 * will not produce on demand, and so the number of processes spawned per call can be counted.
 */
export interface CommandRunner {
  /** Runs `file` with an argument array (never through a shell). Throws CommandError on failure. */
  run(file: string, args: readonly string[], options?: RunOptions): Promise<CommandResult>;
}

export interface ProcessRunnerOptions {
  defaultTimeoutMs?: number;
  env?: Record<string, string>;
}

/** Default environment: libdevmapper must not wait for udev cookies nobody will release. */
export const DEFAULT_COMMAND_ENV: Readonly<Record<string, string>> = {
  DM_DISABLE_UDEV: "1",
  LC_ALL: "C",
};

/** Output beyond this is an error (`dmsetup info` for thousands of devices is a few MB). */
const MAX_OUTPUT_BYTES = 256 * 1024 * 1024;

export class ProcessRunner implements CommandRunner {
  private readonly defaultTimeoutMs: number;
  private readonly env: Record<string, string>;
  /** Processes spawned so far: the benchmark reports it per CSI call. */
  spawned = 0;

  constructor(options: ProcessRunnerOptions = {}) {
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 30_000;
    this.env = { ...DEFAULT_COMMAND_ENV, ...options.env };
  }

  async run(file: string, args: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    this.spawned++;
    // node:child_process directly, not execa: execa's own JavaScript costs ~11 ms of CPU per command on
    // a workstation (measured), several times the cost of a dmsetup call, and the engine runs 2-6 per RPC.
    const result = await new Promise<{ error: ExecFileException | null; stdout: string; stderr: string }>(
      (resolve) => {
        const child = execFile(
          file,
          args,
          {
            encoding: "utf8",
            timeout: options.timeoutMs ?? this.defaultTimeoutMs,
            env: { ...process.env, ...this.env, ...options.env },
            maxBuffer: MAX_OUTPUT_BYTES,
          },
          (error, stdout, stderr) => resolve({ error, stdout, stderr }),
        );
        // Nothing ever reads a table from stdin: give the command an immediate end of input.
        child.stdin?.end();
      },
    );
    const stdout = result.stdout.replace(/\r?\n$/, "");
    const stderr = result.stderr.trim();
    const error = result.error;
    if (error) {
      if (error.code === "ENOENT") {
        throw new CommandError(file, args, null, "ENOENT", `${file} is not installed (not found on PATH)`);
      }
      const timedOut = error.killed === true;
      const exitCode = typeof error.code === "number" ? error.code : null;
      const message = trimDmNoise(stderr || error.message);
      throw new CommandError(
        file,
        args,
        exitCode,
        timedOut ? "ETIMEDOUT" : errnoFromMessage(stderr || message),
        message,
        timedOut,
      );
    }
    return { stdout, stderr: result.stderr };
  }
}

/** dmsetup appends "Command failed." and udev chatter to every error; keep the informative lines. */
export function trimDmNoise(stderr: string): string {
  return stderr
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line && line !== "Command failed." && !/^Udev cookie|^Bypassing udev/i.test(line))
    .join("; ");
}
