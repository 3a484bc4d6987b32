import { execa, type ExecaError } from "execa";
import { CommandError, errnoFromMessage } from "./errors.js";

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  /** Extra environment for this call (merged over the runner's base environment). */
  env?: Record<string, string>;
  /**
   * The caller does not read stdout, so it is not piped. Under TCG a piped stdout costs about 15 ms per
   * command, and a snapshot's origin stays frozen across three of them (measured in the VM under load).
   */
  discardStdout?: boolean;
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

export interface ExecaRunnerOptions {
  defaultTimeoutMs?: number;
  env?: Record<string, string>;
}

/** Default environment: libdevmapper must not wait for udev cookies nobody will release. */
export const DEFAULT_COMMAND_ENV: Readonly<Record<string, string>> = {
  DM_DISABLE_UDEV: "1",
  LC_ALL: "C",
};

export class ExecaRunner implements CommandRunner {
  private readonly defaultTimeoutMs: number;
  /**
   * The whole environment of every command: this process's, taken once, under the runner's own. Copying
   * `process.env` (a view of the C environment, slow to enumerate) per command cost 1.5 ms of this
   * process's CPU per command in the VM; the driver never changes its environment after start.
   */
  private readonly env: Record<string, string | undefined>;
  /** Processes spawned so far: the benchmark reports it per CSI call. */
  spawned = 0;

  constructor(options: ExecaRunnerOptions = {}) {
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 30_000;
    this.env = { ...process.env, ...DEFAULT_COMMAND_ENV, ...options.env };
  }

  async run(file: string, args: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    this.spawned++;
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    const result = await execa(file, args, {
      reject: false,
      timeout: timeoutMs,
      // A command that overruns is killed at once. execa's default (SIGTERM, then SIGKILL 5 s later) arms a
      // second timer per command: ~5 ms of this process each under TCG (VM, under load: 90 ms a
      // `dmsetup version` with it, 85 without). SIGKILL arms none.
      killSignal: "SIGKILL",
      env: options.env ? { ...this.env, ...options.env } : this.env,
      extendEnv: false,
      stdin: "ignore",
      stdout: options.discardStdout ? "ignore" : "pipe",
      stripFinalNewline: true,
      // A kernel command outlives a driver that exits mid-call: a killed `dmsetup resume` would leave an
      // origin suspended, while a finished one is found and recorded by start-up reconciliation.
      cleanup: false,
    });
    if (result.failed) {
      // With `reject: false` a failed run resolves to execa's error, which keeps the spawn error's code.
      const failure = result as ExecaError & Partial<Pick<NodeJS.ErrnoException, "code">>;
      const stderr = String(result.stderr ?? "").trim();
      const spawnCode = failure.code;
      if (spawnCode === "ENOENT") {
        throw new CommandError(file, args, null, "ENOENT", `${file} is not installed (not found on PATH)`);
      }
      const message = result.timedOut
        ? `killed after ${timeoutMs} ms${stderr ? `; ${trimDmNoise(stderr)}` : ""}`
        : trimDmNoise(stderr || (failure.originalMessage ?? ""));
      throw new CommandError(
        file,
        args,
        result.exitCode ?? null,
        result.timedOut ? "ETIMEDOUT" : errnoFromMessage(stderr || message),
        message,
        result.timedOut,
      );
    }
    return { stdout: String(result.stdout ?? ""), stderr: String(result.stderr ?? "") };
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
