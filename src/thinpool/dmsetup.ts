import type { CommandRunner } from "./command.js";
import { CommandError, isErrno } from "./errors.js";
import { retry } from "./retry.js";
import {
  DM_INFO_COLUMNS,
  DM_INFO_SEPARATOR,
  parseDmColumns,
  parseDmInfo,
  parseNamedLines,
  type DmInfo,
} from "./status.js";

export interface DmsetupOptions {
  binary?: string;
  /** Per-call timeout; a hung ioctl must not hang the driver forever. */
  timeoutMs?: number;
  /** How long suspend and resume keep retrying on EBUSY/EINVAL before giving up. */
  suspendDeadlineMs?: number;
  resumeDeadlineMs?: number;
  /** How long remove keeps retrying on EBUSY before falling back to deferred removal. */
  removeDeadlineMs?: number;
  onWarning?: (message: string, err: unknown) => void;
}

/** One device for `createMany`. */
export interface DmDeviceSpec {
  name: string;
  table: string;
  uuid?: string;
}

/** The concise format separates fields with commas and devices with semicolons; a backslash quotes. */
function conciseField(value: string): string {
  return value.replace(/[\\,;]/g, (c) => `\\${c}`);
}

/** Above this many names, one listing of every device is as cheap and keeps the argument list short. */
const MAX_NAMES_PER_CALL = 256;
/** A listing of the host that keeps racing removals fails after this many tries. */
export const WHOLE_HOST_ATTEMPTS = 5;

/**
 * The one place that runs dmsetup. Argument arrays only. Callers get typed CommandErrors whose errno
 * says what the kernel answered (ENXIO: no such device, ENODATA: no such thin id, EEXIST, EBUSY...).
 */
export class Dmsetup {
  private readonly binary: string;
  private readonly timeoutMs: number;
  private readonly suspendDeadlineMs: number;
  private readonly resumeDeadlineMs: number;
  private readonly removeDeadlineMs: number;
  private readonly onWarning: (message: string, err: unknown) => void;

  constructor(
    private readonly runner: CommandRunner,
    options: DmsetupOptions = {},
  ) {
    this.binary = options.binary ?? "dmsetup";
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.suspendDeadlineMs = options.suspendDeadlineMs ?? 10_000;
    this.resumeDeadlineMs = options.resumeDeadlineMs ?? 120_000;
    this.removeDeadlineMs = options.removeDeadlineMs ?? 5_000;
    this.onWarning = options.onWarning ?? (() => undefined);
  }

  /** A query: its output is the answer. */
  private async dm(args: string[]): Promise<string> {
    const { stdout } = await this.runner.run(this.binary, args, { timeoutMs: this.timeoutMs });
    return stdout;
  }

  /**
   * A query about every device on the host. dmsetup lists the devices, then asks about each, and fails
   * with ENXIO when one is removed in between (a concurrent delete or unstage; seen in the VM's
   * concurrency suite): the listing is simply taken again.
   */
  private wholeHost(args: string[]): Promise<string> {
    return retry(() => this.dm(args), {
      attempts: WHOLE_HOST_ATTEMPTS,
      initialDelayMs: 10,
      maxDelayMs: 200,
      retryable: (err) => isErrno(err, "ENXIO"),
    });
  }

  /** A change: only its exit status and stderr matter, so its stdout is not piped. */
  private async act(args: string[]): Promise<void> {
    await this.runner.run(this.binary, args, { timeoutMs: this.timeoutMs, discardStdout: true });
  }

  async create(name: string, table: string, uuid?: string): Promise<void> {
    await this.act(["create", name, ...(uuid ? ["--uuid", uuid] : []), "--table", table]);
  }

  /**
   * Creates several devices in one process (`dmsetup create --concise`), in order. dmsetup stops at the
   * first device it cannot create: the ones before it exist, it does not (a failed table load removes
   * it again) and the ones after it were not tried. One process for a batch instead of one per device:
   * after a reboot the driver brings back every active device at once.
   */
  async createMany(devices: readonly DmDeviceSpec[]): Promise<void> {
    if (devices.length === 0) return;
    const spec = devices.map((d) => [d.name, d.uuid ?? "", "", "", d.table].map(conciseField).join(","));
    await this.act(["create", "--concise", spec.join(";")]);
  }

  async reload(name: string, table: string): Promise<void> {
    await this.act(["reload", name, "--table", table]);
  }

  /** Sends a target message, e.g. `create_thin 7` to a pool. */
  async message(name: string, message: string): Promise<void> {
    await this.act(["message", name, "0", message]);
  }

  /**
   * Suspends with retries on EBUSY/EINVAL (the kernel answers those while another table swap or a
   * flush is still in progress). The default lockfs behaviour is kept on purpose: it freezes a mounted
   * filesystem so a snapshot taken while suspended is filesystem-consistent.
   */
  async suspend(name: string): Promise<void> {
    await retry(() => this.act(["suspend", name]), {
      deadlineMs: this.suspendDeadlineMs,
      initialDelayMs: 20,
      maxDelayMs: 1000,
      retryable: (err) => isErrno(err, "EBUSY", "EINVAL"),
      onRetry: (err, attempt) => this.onWarning(`suspend ${name} failed (attempt ${attempt}), retrying`, err),
    });
  }

  /**
   * Resumes, retrying every failure except "no such device" until the deadline: a device left
   * suspended freezes every write of the workload on it, so giving up early is never the safe choice.
   */
  async resume(name: string): Promise<void> {
    await retry(() => this.act(["resume", name]), {
      deadlineMs: this.resumeDeadlineMs,
      initialDelayMs: 20,
      maxDelayMs: 2000,
      retryable: (err) => !isErrno(err, "ENXIO"),
      onRetry: (err, attempt) =>
        this.onWarning(
          `RESUME OF ${name} FAILED (attempt ${attempt}); its I/O is frozen until it succeeds`,
          err,
        ),
    });
  }

  /**
   * Removes a device, retrying while it is busy (udev-less systems still see short-lived openers such
   * as blkid). Returns "deferred" when it stayed busy and the kernel was asked to remove it on last close.
   * A device that does not exist counts as removed.
   */
  async remove(name: string, options: { deferredIfBusy: boolean }): Promise<"removed" | "deferred"> {
    try {
      await retry(() => this.act(["remove", name]), {
        deadlineMs: this.removeDeadlineMs,
        initialDelayMs: 20,
        maxDelayMs: 500,
        retryable: (err) => isErrno(err, "EBUSY"),
      });
      return "removed";
    } catch (err) {
      if (isErrno(err, "ENXIO")) return "removed";
      if (options.deferredIfBusy && isErrno(err, "EBUSY")) {
        await this.act(["remove", "--deferred", name]);
        return "deferred";
      }
      throw err;
    }
  }

  /** Cancels a pending deferred removal (the device is wanted again). */
  async cancelDeferredRemove(name: string): Promise<void> {
    await this.message(name, "@cancel_deferred_remove");
  }

  /** Info for one device, or undefined when it does not exist. */
  async info(name: string): Promise<DmInfo | undefined> {
    try {
      return parseDmInfo(await this.dm(["info", name]))[0];
    } catch (err) {
      if (isErrno(err, "ENXIO")) return undefined;
      throw err;
    }
  }

  async status(name: string): Promise<string> {
    return (await this.dm(["status", name])).trim();
  }

  async table(name: string): Promise<string> {
    return (await this.dm(["table", name])).trim();
  }

  /**
   * Info of every dm device whose name starts with `prefix`. Not tables: reading a table is an ioctl that
   * took ~0.5 ms of kernel time per device in the benchmark VM against ~0.02 ms for info, so at 2,060
   * devices `dmsetup -v table` took 2.8-7.8 s. Columns, not the long form, which also reads every
   * device's read-ahead: 609-731 ms against 1,038-1,521 (docs/PERFORMANCE.md). The columns lack one flag,
   * a pending deferred removal; only an open device can have one (the kernel removes a closed device at
   * once), so the open devices among ours are read again in the long form, in one more process.
   */
  async infoAll(prefix: string): Promise<DmInfo[]> {
    const listing = await this.wholeHost([
      "info",
      "-c",
      "--noheadings",
      "--separator",
      DM_INFO_SEPARATOR,
      "-o",
      DM_INFO_COLUMNS,
    ]);
    const ours = parseDmColumns(listing).filter((device) => device.name.startsWith(prefix));
    const open = ours.filter((device) => device.openCount > 0).map((device) => device.name);
    if (open.length === 0) return ours;
    const long = await this.infoOf(open);
    return ours.map((device) => ({
      ...device,
      deferredRemove: long.get(device.name)?.deferredRemove ?? false,
    }));
  }

  /**
   * Info for the named devices, keyed by name, in one process; a device that does not exist is absent.
   * dmsetup stops at the first name that does not exist, so that (rare) case, and a list long enough to
   * be a listing of the host anyway, read every device instead.
   */
  async infoOf(names: readonly string[]): Promise<Map<string, DmInfo>> {
    const text = await this.forNames(names, ["info"], ["info"]);
    return new Map(parseDmInfo(text).map((info) => [info.name, info]));
  }

  /** Statuses of the named thin devices, keyed by name, in one process (absent: no such device). */
  async thinStatusOf(names: readonly string[]): Promise<Map<string, string>> {
    const text = await this.forNames(names, ["status"], ["status", "--target", "thin"]);
    // dmsetup prefixes each line with the device's name only when it reports more than one device.
    const [only] = names;
    return names.length === 1 && only !== undefined && !text.startsWith(`${only}: `)
      ? new Map([[only, text.trim()]])
      : parseNamedLines(text);
  }

  private async forNames(names: readonly string[], command: string[], wholeHost: string[]): Promise<string> {
    if (names.length === 0) return "";
    if (names.length > MAX_NAMES_PER_CALL) return this.wholeHost(wholeHost);
    try {
      return await this.dm([...command, ...names]);
    } catch (err) {
      if (isErrno(err, "ENXIO")) return this.wholeHost(wholeHost);
      throw err;
    }
  }

  /** Statuses of every device using the given target type, keyed by name. */
  async statusAll(target: string): Promise<Map<string, string>> {
    return parseNamedLines(await this.wholeHost(["status", "--target", target]));
  }

  /** Creates missing /dev/mapper nodes (needed when udev is bypassed and a node went missing). */
  async mknodes(name?: string): Promise<void> {
    await this.act(["mknodes", ...(name ? [name] : [])]);
  }
}

export { CommandError };
