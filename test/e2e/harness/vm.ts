// runInVm(): boot a throw-away qemu VM (TCG, no KVM) on the host's kernel, run one command inside it with
// real device-mapper, and return its exit code and console output.
//
// Why a VM at all: the host kernel has no device-mapper and loads no modules, and nested KVM hangs, so the
// real dm-thin code can only be exercised in a fully emulated guest. The guest sees the host's root file
// system read-only through virtio-9p (with a tmpfs overlay making it writable and private), so it runs the
// very same node, node_modules, dist/ and dmsetup as the host, with zero image building.
//
// Guest environment:
//   - cwd defaults to the repository root (same absolute path as on the host).
//   - Disks are virtio-blk, attached in the order given: /dev/vda, /dev/vdb, ... (see guestDiskPath()); each
//     also gets /dev/disk/by-id/virtio-<serial>. The init checks the serials, so the order is guaranteed.
//   - resultDir (optional) is a read-write share mounted at the same absolute path as on the host, also
//     exported as THINPOOL_VM_RESULT_DIR: anything the command writes there is visible on the host.
//   - No udev (DM_DISABLE_UDEV=1 is set), no network, THINPOOL_VM=1, the host's node first on PATH.
//   - Modules dm-thin-pool, loop, ext4 and xfs are loaded before the command starts (see `modules`).
//
// Power loss: `killWhen` SIGKILLs qemu at a marker line or after a delay. What the guest had submitted to
// the virtual disk before that survives (qemu writes straight into the image file); what was still only in
// the guest's page cache is lost. See the "weak spots" note on killWhen.

import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, type WriteStream } from "node:fs";
import { access, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { StringDecoder } from "node:string_decoder";
import { execa, type ExecaChildProcess, type ExecaError } from "execa";

import { findOnPath } from "../../support/executables.js";
import { repoRoot } from "../../support/repo.js";
import { prepareBootAssets, VmSetupError, type BootAssets } from "./boot-assets.js";
import {
  exitMarkerPrefix,
  INIT_FAILED_MARKER,
  renderGuestConfig,
  renderRunScript,
  startMarker,
  TAG_CTL,
  TAG_HOSTROOT,
  TAG_RESULTS,
  watchdogMarker,
} from "./guest-scripts.js";

export { VmSetupError } from "./boot-assets.js";

/** qemu's host-side cache mode for a disk image (`-drive cache=`). */
export type DiskCacheMode = "writeback" | "none" | "writethrough" | "directsync" | "unsafe";

export interface VmDisk {
  /** Raw image file on the host. Created as a sparse file of `sizeBytes` if it does not exist. */
  path: string;
  /** Required to create the image; if the file exists its size must match (catches mixed-up images). */
  sizeBytes?: number;
  /** virtio-blk serial (1-20 of [A-Za-z0-9_.-]); the guest gets /dev/disk/by-id/virtio-<serial>. */
  serial: string;
  /** Default "writeback": guest flushes become fdatasync() on the image, like a disk with a write cache. */
  cache?: DiskCacheMode;
  /** Pass guest discards (TRIM) through to the image by punching holes. Default true. */
  discard?: boolean;
}

/**
 * When to pull the plug (SIGKILL qemu, no guest shutdown):
 *  - `{ marker }`: as soon as a console line of the command's output contains `marker`;
 *  - `{ afterMs }`: that long after the command started (`from: "command"`, default) or after qemu was
 *    spawned (`from: "spawn"`, lands somewhere in boot).
 * Weak spot: the kill lands a few milliseconds after the marker was printed (console latency), so the guest
 * may already have done a little more work. Tests must only rely on what was made durable *before* the
 * marker was printed.
 */
export type KillWhen = { marker: string } | { afterMs: number; from?: "command" | "spawn" };

export interface RunInVmOptions {
  /** argv run inside the VM (PATH lookup applies to argv[0]); no shell unless you ask for one. */
  command: readonly string[];
  /** Extra environment for the command (the guest does not inherit the host's environment). */
  env?: Record<string, string>;
  /** Working directory inside the guest; defaults to the repository root. */
  cwd?: string;
  disks?: readonly VmDisk[];
  /** Hard limit for the whole run, boot included. On expiry qemu is killed and VmTimeoutError thrown. */
  timeoutMs: number;
  killWhen?: KillWhen;
  /** Host directory shared read-write; mounted at the same path in the guest. Created if missing. */
  resultDir?: string;
  /** Modules to modprobe before the command starts. Default: DEFAULT_GUEST_MODULES. */
  modules?: readonly string[];
  /** Default 2048. */
  memoryMiB?: number;
  /** Default 2 (TCG runs one host thread per vCPU). */
  cpus?: number;
  /** Called with each line the command prints (console line of the command phase, \r stripped). */
  onLine?: (line: string) => void;
  /** Called with every console line, boot and shutdown included. */
  onConsoleLine?: (line: string) => void;
  /** Also write the complete console log to this file. */
  logFile?: string;
  /** Append `oops=panic` so a kernel oops ends the run at once (VmCrashError) instead of hanging. Default true. */
  panicOnOops?: boolean;
  /** Extra kernel command line arguments (appended, so they override the defaults). */
  kernelArgs?: readonly string[];
  /** Extra raw qemu arguments, appended last. */
  extraQemuArgs?: readonly string[];
}

export interface VmRunResult {
  /** The command's exit status; null when the VM was killed (killWhen) before it finished. */
  exitCode: number | null;
  /** True when killWhen fired and qemu was SIGKILLed. */
  killed: boolean;
  /** What the command printed (stdout and stderr interleaved, as on a terminal; kernel messages may mix in). */
  output: string;
  /** The complete serial console log. */
  console: string;
  /** Spawn of qemu until the command started (kernel boot, init, module loading). */
  bootMs: number;
  /** Command start until it exited or the VM was killed. */
  commandMs: number;
  /** Time spent building boot artefacts in this call (0 when cached). */
  assetBuildMs: number;
  /** The guest's dmesg after the command (null when it did not finish normally). */
  kernelLog: string | null;
}

/** Base class of runtime failures; `console` holds the serial log up to the failure. */
export class VmError extends Error {
  override name = "VmError";
  constructor(
    message: string,
    readonly console: string,
  ) {
    super(message);
  }
}
/** The guest never got to run the command (init failure, panic during boot, qemu refused to start). */
export class VmBootError extends VmError {
  override name = "VmBootError";
}
/** timeoutMs expired (or the guest-side watchdog fired); qemu was killed. */
export class VmTimeoutError extends VmError {
  override name = "VmTimeoutError";
}
/** The VM stopped while the command was running without reporting an exit code (kernel panic/oops). */
export class VmCrashError extends VmError {
  override name = "VmCrashError";
}

export const DEFAULT_GUEST_MODULES: readonly string[] = ["dm-thin-pool", "loop", "ext4", "xfs"];

const MAX_DISKS = 20;

/** Device node of the index-th disk passed to runInVm (0 -> /dev/vda). */
export function guestDiskPath(index: number): string {
  return `/dev/${guestDiskName(index)}`;
}

/** Stable alias of a disk by serial, created by the guest init. */
export function guestDiskById(serial: string): string {
  return `/dev/disk/by-id/virtio-${serial}`;
}

function guestDiskName(index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_DISKS) {
    throw new RangeError(`disk index ${index} out of range 0..${MAX_DISKS - 1}`);
  }
  return `vd${String.fromCharCode(97 + index)}`;
}

// ---------------------------------------------------------------------------------------------------------
// Process bookkeeping: never leave a qemu behind.

const liveVms = new Set<ExecaChildProcess>();
let exitHookInstalled = false;

function trackVm(subprocess: ExecaChildProcess): void {
  liveVms.add(subprocess);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // execa's `cleanup` already SIGTERMs children on exit and on fatal signals; this makes it a SIGKILL for
    // the ones still running when Node exits (e.g. a test called process.exit()). The guest-side watchdog
    // covers the case where this process is itself SIGKILLed.
    process.on("exit", () => {
      for (const vm of liveVms) vm.kill("SIGKILL");
    });
  }
}

// ---------------------------------------------------------------------------------------------------------

async function findQemu(): Promise<string> {
  const override = process.env.THINPOOL_VM_QEMU;
  if (override !== undefined && override !== "") {
    try {
      await access(override, 1 /* X_OK */);
    } catch {
      throw new VmSetupError(`THINPOOL_VM_QEMU=${override} is not an executable file`);
    }
    return override;
  }
  const found = await findOnPath("qemu-system-x86_64", process.env.PATH ?? "/usr/bin:/bin");
  if (found !== null) return found;
  throw new VmSetupError("qemu-system-x86_64 not found: run .ci/run or apt-get install qemu-system-x86");
}

/** qemu's option parser splits on commas; a literal comma in a value is written as ",,". */
function qemuValue(value: string): string {
  return value.replace(/,/g, ",,");
}

async function prepareDisk(disk: VmDisk, index: number): Promise<string> {
  if (!/^[A-Za-z0-9_.-]{1,20}$/.test(disk.serial)) {
    throw new VmSetupError(
      `disk ${index}: serial ${JSON.stringify(disk.serial)} must be 1-20 characters of [A-Za-z0-9_.-]`,
    );
  }
  const abs = path.resolve(disk.path);
  if (existsSync(abs)) {
    const size = (await stat(abs)).size;
    if (disk.sizeBytes !== undefined && size !== disk.sizeBytes) {
      throw new VmSetupError(`disk image ${abs} is ${size} bytes, expected ${disk.sizeBytes}`);
    }
    return abs;
  }
  if (disk.sizeBytes === undefined || !Number.isSafeInteger(disk.sizeBytes) || disk.sizeBytes <= 0) {
    throw new VmSetupError(`disk image ${abs} does not exist and no valid sizeBytes was given to create it`);
  }
  if (disk.sizeBytes % 512 !== 0) {
    throw new VmSetupError(`disk image ${abs}: sizeBytes ${disk.sizeBytes} is not a multiple of 512`);
  }
  await mkdir(path.dirname(abs), { recursive: true });
  // Sparse: a 2 GiB data disk costs nothing until the guest writes to it.
  const handle = await open(abs, "wx");
  try {
    await handle.truncate(disk.sizeBytes);
  } finally {
    await handle.close();
  }
  return abs;
}

function guestEnv(
  options: RunInVmOptions,
  resultDir: string | null,
  dmsetupDir: string,
): Record<string, string> {
  const env: Record<string, string> = {
    // The host's node (whatever install method) comes first, visible at the same path via the 9p root,
    // then the dmsetup the image ships in place of Debian's.
    PATH: [
      path.dirname(process.execPath),
      dmsetupDir,
      "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ].join(":"),
    HOME: "/root",
    LANG: "C.UTF-8",
    TERM: "dumb",
    // There is no udev in the guest; libdevmapper must create /dev/mapper nodes itself and not wait for
    // udev cookies.
    DM_DISABLE_UDEV: "1",
    THINPOOL_VM: "1",
  };
  if (resultDir !== null) env.THINPOOL_VM_RESULT_DIR = resultDir;
  return { ...env, ...options.env };
}

function lastLines(text: string, count: number): string {
  const lines = text.split("\n");
  return lines.slice(Math.max(0, lines.length - count)).join("\n");
}

function describeFailure(summary: string, consoleText: string, qemuStderr: string): string {
  const parts = [summary];
  if (qemuStderr.trim()) parts.push(`qemu stderr:\n${qemuStderr.trim()}`);
  parts.push(
    consoleText.trim() ? `last console lines:\n${lastLines(consoleText, 40)}` : "(no console output)",
  );
  return parts.join("\n");
}

/** Boots a VM, runs `options.command` in it and resolves when the VM is gone. See the file header. */
export async function runInVm(options: RunInVmOptions): Promise<VmRunResult> {
  if (!Number.isFinite(options.timeoutMs) || options.timeoutMs <= 0) {
    throw new VmSetupError(`runInVm: timeoutMs must be a positive number, got ${options.timeoutMs}`);
  }
  const disks = options.disks ?? [];
  if (disks.length > MAX_DISKS) throw new VmSetupError(`runInVm: at most ${MAX_DISKS} disks are supported`);
  const serials = new Set(disks.map((d) => d.serial));
  if (serials.size !== disks.length) throw new VmSetupError("runInVm: disk serials must be unique");

  const qemu = await findQemu();
  const assets: BootAssets = await prepareBootAssets();
  const diskPaths: string[] = [];
  for (const [i, disk] of disks.entries()) diskPaths.push(await prepareDisk(disk, i));

  const resultDir = options.resultDir === undefined ? null : path.resolve(options.resultDir);
  if (resultDir !== null) await mkdir(resultDir, { recursive: true });

  const nonce = randomBytes(6).toString("hex");
  const ctlDir = await mkdtemp(path.join(os.tmpdir(), "thinpool-vm-"));
  let logStream: WriteStream | null = null;
  try {
    await writeFile(
      path.join(ctlDir, "config.sh"),
      renderGuestConfig({
        nonce,
        disks: disks.map((d, i) => ({ dev: guestDiskName(i), serial: d.serial })),
        resultDir,
        modules: [...(options.modules ?? DEFAULT_GUEST_MODULES)],
        // Generous: it only matters when the host side is gone, and must never beat the host's timer.
        watchdogSeconds: options.timeoutMs / 1000 + 120,
      }),
    );
    await writeFile(
      path.join(ctlDir, "run.sh"),
      renderRunScript(
        options.command,
        options.cwd ?? repoRoot,
        guestEnv(options, resultDir, assets.dmsetupDir),
      ),
    );

    const cmdline = [
      "console=ttyS0",
      "quiet",
      // A panic reboots at once, and -no-reboot turns that into qemu exiting: crashes end the run quickly.
      "panic=-1",
      "rdinit=/init",
      ...(options.panicOnOops === false ? [] : ["oops=panic"]),
      ...(options.kernelArgs ?? []),
    ].join(" ");

    const args = [
      ...["-machine", "q35", "-accel", "tcg", "-cpu", "max"],
      ...["-m", String(options.memoryMiB ?? 2048), "-smp", String(options.cpus ?? 2)],
      // No default devices (no NIC, no VGA), no network, no ~/.config/qemu surprises.
      ...["-nodefaults", "-no-user-config", "-nic", "none", "-display", "none", "-no-reboot"],
      // signal=off: a ^C in the harness's terminal must not be swallowed by qemu's stdio console.
      ...["-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0"],
      ...["-kernel", assets.kernelImage, "-initrd", assets.initramfsPath, "-append", cmdline],
      // multidevs=remap: the host root spans several file systems; without it inode numbers can collide.
      ...[
        "-fsdev",
        `local,id=${TAG_HOSTROOT},path=/,readonly=on,security_model=none,multidevs=remap`,
        "-device",
        `virtio-9p-pci,fsdev=${TAG_HOSTROOT},mount_tag=${TAG_HOSTROOT}`,
      ],
      ...[
        "-fsdev",
        `local,id=${TAG_CTL},path=${qemuValue(ctlDir)},security_model=none,multidevs=remap`,
        "-device",
        `virtio-9p-pci,fsdev=${TAG_CTL},mount_tag=${TAG_CTL}`,
      ],
      ...(resultDir === null
        ? []
        : [
            "-fsdev",
            `local,id=${TAG_RESULTS},path=${qemuValue(resultDir)},security_model=none,multidevs=remap`,
            "-device",
            `virtio-9p-pci,fsdev=${TAG_RESULTS},mount_tag=${TAG_RESULTS}`,
          ]),
      ...disks.flatMap((disk, i) => [
        "-drive",
        [
          `file=${qemuValue(diskPaths[i] ?? "")}`,
          "format=raw",
          "if=none",
          `id=disk${i}`,
          `cache=${disk.cache ?? "writeback"}`,
          `discard=${disk.discard === false ? "ignore" : "unmap"}`,
        ].join(","),
        "-device",
        `virtio-blk-pci,drive=disk${i},serial=${disk.serial}`,
      ]),
      ...(options.extraQemuArgs ?? []),
    ];

    const debug = process.env.THINPOOL_VM_DEBUG === "1";
    if (debug) console.error(`[vm] ${qemu} ${args.join(" ")}`);
    if (options.logFile !== undefined) {
      await mkdir(path.dirname(path.resolve(options.logFile)), { recursive: true });
      logStream = createWriteStream(options.logFile);
    }

    const spawnedAt = Date.now();
    const subprocess = execa(qemu, args, {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      buffer: false,
      reject: false,
      cleanup: true,
    });
    trackVm(subprocess);

    const consoleLines: string[] = [];
    const outputLines: string[] = [];
    let qemuStderr = "";
    // `as`: the phase changes inside callbacks, which TypeScript's flow narrowing cannot see.
    let phase = "boot" as "boot" | "command" | "shutdown";
    let startedAt: number | null = null;
    let endedAt: number | null = null;
    let markerExitCode: number | null = null;
    let initFailure: string | null = null;
    let watchdogFired = false;
    let killedByRequest = false;
    let timedOut = false;
    let callbackError: unknown = null;
    let afterMsTimer: NodeJS.Timeout | null = null;
    const startLine = startMarker(nonce);
    const exitPrefix = exitMarkerPrefix(nonce);
    const watchdogLine = watchdogMarker(nonce);

    const powerLoss = (): void => {
      if (killedByRequest || phase !== "command") return;
      killedByRequest = true;
      endedAt = Date.now();
      subprocess.kill("SIGKILL");
    };
    const armAfterMs = (delay: number): void => {
      afterMsTimer = setTimeout(powerLoss, delay);
    };
    const killWhen = options.killWhen;
    if (killWhen !== undefined && "afterMs" in killWhen && killWhen.from === "spawn") {
      // Before the command starts, `powerLoss` only records the kill if we are already in the command phase;
      // a spawn-relative kill during boot is a plain SIGKILL reported as killed.
      afterMsTimer = setTimeout(() => {
        killedByRequest = true;
        endedAt = Date.now();
        subprocess.kill("SIGKILL");
      }, killWhen.afterMs);
    }

    const emitOutput = (line: string): void => {
      outputLines.push(line);
      try {
        options.onLine?.(line);
      } catch (err) {
        // A throwing callback must not leave qemu running; remember the error and rethrow it at the end.
        callbackError ??= err;
        subprocess.kill("SIGKILL");
      }
      if (killWhen !== undefined && "marker" in killWhen && line.includes(killWhen.marker)) powerLoss();
    };

    const handleLine = (raw: string): void => {
      const line = raw.replace(/\r/g, "");
      consoleLines.push(line);
      logStream?.write(line + "\n");
      if (debug) console.error(`[vm] ${line}`);
      try {
        options.onConsoleLine?.(line);
      } catch (err) {
        callbackError ??= err;
        subprocess.kill("SIGKILL");
      }
      if (line.includes(INIT_FAILED_MARKER)) {
        initFailure ??= line
          .slice(line.indexOf(INIT_FAILED_MARKER) + INIT_FAILED_MARKER.length)
          .replace(/@@$/, "");
        return;
      }
      if (line.includes(watchdogLine)) {
        watchdogFired = true;
        return;
      }
      switch (phase) {
        case "boot":
          if (line.includes(startLine)) {
            phase = "command";
            startedAt = Date.now();
            if (killWhen !== undefined && "afterMs" in killWhen && killWhen.from !== "spawn") {
              armAfterMs(killWhen.afterMs);
            }
          }
          break;
        case "command": {
          const at = line.indexOf(exitPrefix);
          if (at >= 0) {
            // The command's last line may lack a newline, leaving it glued in front of the marker.
            if (at > 0) emitOutput(line.slice(0, at));
            const match = /^(\d+)@@/.exec(line.slice(at + exitPrefix.length));
            if (match?.[1] !== undefined) markerExitCode = Number(match[1]);
            phase = "shutdown";
            endedAt ??= Date.now();
          } else {
            emitOutput(line);
          }
          break;
        }
        case "shutdown":
          break;
      }
    };

    const decoder = new StringDecoder("utf8");
    let pending = "";
    subprocess.stdout?.on("data", (chunk: Buffer) => {
      pending += decoder.write(chunk);
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        handleLine(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    });
    subprocess.stderr?.on("data", (chunk: Buffer) => {
      // Bounded: qemu only writes errors here, but never let a runaway stream eat memory.
      if (qemuStderr.length < 65536) qemuStderr += chunk.toString("utf8");
    });

    const timeoutTimer = setTimeout(() => {
      timedOut = true;
      subprocess.kill("SIGKILL");
    }, options.timeoutMs);

    let qemuResult;
    try {
      qemuResult = await subprocess;
    } finally {
      clearTimeout(timeoutTimer);
      if (afterMsTimer !== null) clearTimeout(afterMsTimer);
      liveVms.delete(subprocess);
    }
    pending += decoder.end();
    if (pending) handleLine(pending);
    const finishedAt = Date.now();
    const consoleText = consoleLines.join("\n");

    if (callbackError !== null) throw callbackError;
    if (qemuResult.exitCode === undefined && qemuResult.signal === undefined) {
      // execa could not start the process at all (ENOENT, EACCES, ...); it resolved to its error.
      throw new VmSetupError(`cannot run ${qemu}: ${(qemuResult as ExecaError).shortMessage}`);
    }
    const exitFile = await readFile(path.join(ctlDir, "exit-code"), "utf8").catch(() => null);
    const fileExitCode = exitFile !== null && /^\d+\s*$/.test(exitFile) ? Number(exitFile.trim()) : null;
    const exitCode = fileExitCode ?? markerExitCode;
    const bootMs = (startedAt ?? finishedAt) - spawnedAt;

    if (timedOut) {
      throw new VmTimeoutError(
        describeFailure(
          `VM timed out after ${options.timeoutMs} ms ${startedAt === null ? "while booting" : "while running the command"} ` +
            `(${options.command.join(" ")}); qemu was killed`,
          consoleText,
          qemuStderr,
        ),
        consoleText,
      );
    }
    if (killedByRequest && (exitCode === null || phase !== "shutdown")) {
      return {
        exitCode: null,
        killed: true,
        output: outputLines.join("\n"),
        console: consoleText,
        bootMs,
        commandMs: startedAt === null ? 0 : (endedAt ?? finishedAt) - startedAt,
        assetBuildMs: assets.buildMs,
        kernelLog: null,
      };
    }
    if (initFailure !== null) {
      throw new VmBootError(
        describeFailure(`VM init failed: ${initFailure}`, consoleText, qemuStderr),
        consoleText,
      );
    }
    if (startedAt === null) {
      throw new VmBootError(
        describeFailure(
          `VM exited before the command started (qemu exit code ${qemuResult.exitCode ?? "none"}` +
            `${qemuResult.signal ? `, signal ${qemuResult.signal}` : ""})`,
          consoleText,
          qemuStderr,
        ),
        consoleText,
      );
    }
    if (watchdogFired) {
      throw new VmTimeoutError(
        describeFailure("the guest-side watchdog powered the VM off", consoleText, qemuStderr),
        consoleText,
      );
    }
    if (exitCode === null) {
      throw new VmCrashError(
        describeFailure(
          "VM stopped while the command was running, without an exit code (kernel panic or oops?)",
          consoleText,
          qemuStderr,
        ),
        consoleText,
      );
    }
    const kernelLog = await readFile(path.join(ctlDir, "dmesg.txt"), "utf8").catch(() => null);
    return {
      exitCode,
      killed: false,
      output: outputLines.join("\n"),
      console: consoleText,
      bootMs,
      commandMs: (endedAt ?? finishedAt) - startedAt,
      assetBuildMs: assets.buildMs,
      kernelLog,
    };
  } finally {
    if (logStream !== null) {
      const stream = logStream;
      await new Promise<void>((resolve) => stream.end(resolve));
    }
    if (process.env.THINPOOL_VM_KEEP_CTL !== "1") await rm(ctlDir, { recursive: true, force: true });
  }
}
