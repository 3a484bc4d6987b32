import type { StateStore } from "../../../src/state/store.js";
import type { CommandResult, CommandRunner, RunOptions } from "../../../src/thinpool/command.js";
import { ThinPoolEngine, type EngineOptions } from "../../../src/thinpool/engine.js";
import { CommandError, errnoFromMessage } from "../../../src/thinpool/errors.js";

/**
 * An in-memory stand-in for device-mapper and dm-thin, answering dmsetup the way the kernel does
 * (same stdout formats, same strerror texts on stderr). Used only to inject faults the real kernel will
 * not produce on demand (EBUSY, a failing resume, an id collision); every path is also run for real in
 * the VM suites.
 */
interface FakeDevice {
  name: string;
  uuid: string;
  table: string;
  suspended: boolean;
  openCount: number;
  deferredRemove: boolean;
  minor: number;
  /** What a thin device's status reports as mapped. */
  mappedSectors: number;
  /** A thin device the kernel failed (`dmsetup status` says Fail). */
  failed: boolean;
}

interface Fault {
  match: (args: readonly string[]) => boolean;
  stderr: string;
  times: number;
}

export class FakeKernel implements CommandRunner {
  readonly devices = new Map<string, FakeDevice>();
  readonly thinIds = new Set<number>();
  transactionId = 0n;
  dataUsedBlocks = 0;
  dataTotalBlocks = 16384;
  metadataUsedBlocks = 100;
  metadataTotalBlocks = 4096;
  /** Metadata blocks each create_thin and create_snap uses (the real cost is a few btree nodes). */
  metadataBlocksPerCreate = 0;
  poolMode = "rw";
  /** What `blkid -p` answers: exit 2 with no output means "no signature found". */
  blkid: { exitCode: number; stdout: string } = { exitCode: 2, stdout: "" };
  calls: string[][] = [];
  private faults: Fault[] = [];
  private nextMinor = 10;

  constructor(readonly poolName = "pool0") {
    this.addDevice(poolName, "0 2097152 thin-pool 254:1 254:0 128 0 1 error_if_no_space", "");
  }

  addDevice(name: string, table: string, uuid: string): FakeDevice {
    const device: FakeDevice = {
      name,
      uuid,
      table,
      suspended: false,
      openCount: 0,
      deferredRemove: false,
      minor: this.nextMinor++,
      mappedSectors: 0,
      failed: false,
    };
    this.devices.set(name, device);
    return device;
  }

  /** The next `times` calls whose argv matches fail with this stderr. */
  fail(match: (args: readonly string[]) => boolean, stderr: string, times = 1): void {
    this.faults.push({ match, stderr, times });
  }

  async run(file: string, args: readonly string[], _options?: RunOptions): Promise<CommandResult> {
    this.calls.push([file, ...args]);
    const fault = this.faults.find((f) => f.times > 0 && f.match([file, ...args]));
    if (fault) {
      fault.times--;
      throw new CommandError(file, args, 1, errnoFromMessage(fault.stderr), fault.stderr);
    }
    if (file === "dmsetup") return { stdout: this.dmsetup(args), stderr: "" };
    if (file === "blkdiscard") return { stdout: "", stderr: "" };
    if (file === "blkid") {
      if (this.blkid.exitCode !== 0) throw new CommandError(file, args, this.blkid.exitCode, "UNKNOWN", "");
      return { stdout: this.blkid.stdout, stderr: "" };
    }
    if (file === "thin_ls") {
      const ids = [...this.thinIds].sort((a, b) => a - b);
      const withBytes = args.includes("DEV,MAPPED_BYTES");
      return {
        stdout: ids.map((id) => (withBytes ? `${id} 0` : `${id}`)).join("\n"),
        stderr: "",
      };
    }
    throw new CommandError(file, args, null, "ENOENT", `${file} is not installed (not found on PATH)`);
  }

  private err(args: readonly string[], text: string): never {
    throw new CommandError("dmsetup", args, 1, errnoFromMessage(text), text);
  }

  private get(name: string, args: readonly string[]): FakeDevice {
    const device = this.devices.get(name);
    if (!device) this.err(args, `Device ${name} not found`);
    return device;
  }

  private dmsetup(args: readonly string[]): string {
    const [verb, ...rest] = args;
    switch (verb) {
      case "create": {
        if (rest[0] === "--concise") {
          // Like dmsetup: each device in turn, stopping at the first that cannot be created.
          for (const [name, uuid, , , table] of parseConcise(rest[1] as string))
            this.createDevice(args, name as string, table as string, uuid as string);
          return "";
        }
        const uuid = rest.includes("--uuid") ? (rest[rest.indexOf("--uuid") + 1] as string) : "";
        this.createDevice(args, rest[0] as string, rest[rest.indexOf("--table") + 1] as string, uuid);
        return "";
      }
      case "reload": {
        this.get(rest[0] as string, args).table = rest[rest.indexOf("--table") + 1] as string;
        return "";
      }
      case "suspend":
        this.get(rest[0] as string, args).suspended = true;
        return "";
      case "resume":
        this.get(rest[0] as string, args).suspended = false;
        return "";
      case "remove": {
        const deferred = rest[0] === "--deferred";
        const name = rest[rest.length - 1] as string;
        const device = this.get(name, args);
        if (device.openCount > 0) {
          if (deferred) {
            device.deferredRemove = true;
            return "";
          }
          this.err(args, `device-mapper: remove ioctl on ${name}  failed: Device or resource busy`);
        }
        this.devices.delete(name);
        return "";
      }
      case "message":
        return this.message(args, rest[0] as string, rest[2] as string);
      case "info": {
        if (rest[0] === "-c") {
          // Columns as the driver asks for them: mangled_name,mangled_uuid,attr,open,major,minor.
          return [...this.devices.values()]
            .map((d) => {
              const attr = `L-${d.suspended ? "s" : "-"}w`;
              return [d.name, d.uuid, attr, d.openCount, 254, d.minor].join("|");
            })
            .join("\n");
        }
        // Like dmsetup: every named device in turn, failing the whole call at the first missing one.
        const names = rest.length ? rest : [...this.devices.keys()];
        return names.map((n) => this.infoBlock(this.get(n, args))).join("\n\n");
      }
      case "status": {
        if (rest[0] === "--target") {
          return [...this.devices.values()]
            .filter((d) => d.table.split(" ")[2] === rest[1])
            .map((d) => `${d.name}: ${this.statusLine(d)}`)
            .join("\n");
        }
        // One device: its line alone; several: each line prefixed with the device's name.
        if (rest.length === 1) return this.statusLine(this.get(rest[0] as string, args));
        return rest.map((n) => `${n}: ${this.statusLine(this.get(n, args))}`).join("\n");
      }
      case "table":
        return this.get(rest[0] as string, args).table;
      case "mknodes":
        return "";
      default:
        return this.err(args, `Unknown command ${verb}`);
    }
  }

  private createDevice(args: readonly string[], name: string, table: string, uuid: string): void {
    if (this.devices.has(name))
      this.err(args, `device-mapper: create ioctl on ${name}  failed: Device or resource busy`);
    const id = Number(table.split(" ")[4]);
    if (table.includes(" thin ") && !this.thinIds.has(id))
      this.err(args, `device-mapper: reload ioctl on ${name}  failed: No data available`);
    this.addDevice(name, table, uuid);
  }

  private message(args: readonly string[], target: string, text: string): string {
    const device = this.get(target, args);
    if (device.name !== this.poolName) {
      if (text === "@cancel_deferred_remove") {
        device.deferredRemove = false;
        return "";
      }
      this.err(args, `device-mapper: message ioctl on ${target}  failed: Invalid argument`);
    }
    const fail = (strerror: string): never =>
      this.err(args, `device-mapper: message ioctl on ${target}  failed: ${strerror}`);
    const [op, a, b] = text.split(" ");
    switch (op) {
      case "create_thin":
        if (this.thinIds.has(Number(a))) fail("File exists");
        this.thinIds.add(Number(a));
        this.metadataUsedBlocks += this.metadataBlocksPerCreate;
        return "";
      case "create_snap":
        if (this.thinIds.has(Number(a))) fail("File exists");
        if (!this.thinIds.has(Number(b))) fail("No data available");
        this.thinIds.add(Number(a));
        this.metadataUsedBlocks += this.metadataBlocksPerCreate;
        return "";
      case "delete":
        if (!this.thinIds.delete(Number(a))) fail("No data available");
        return "";
      case "set_transaction_id":
        if (BigInt(a as string) !== this.transactionId) fail("Invalid argument");
        this.transactionId = BigInt(b as string);
        return "";
      case "reserve_metadata_snap":
      case "release_metadata_snap":
        return "";
      default:
        return fail("Invalid argument");
    }
  }

  /** The engine's sysfs seam: a device's size is its table's length, 0 without one (like the kernel). */
  sectorsOf = async (devno: string): Promise<number> => {
    this.sizeReads.push(devno);
    const device = [...this.devices.values()].find((d) => `254:${d.minor}` === devno);
    if (!device) throw new Error(`ENOENT: no block device ${devno}`);
    return device.table ? Number(device.table.split(" ")[1]) : 0;
  };
  /** Devices whose size was read one by one (sysfs), in order. */
  sizeReads: string[] = [];

  /** The engine's /proc/partitions seam: every device with a table, by "major:minor". */
  allSectors = async (): Promise<Map<string, number>> =>
    new Map(
      [...this.devices.values()]
        .filter((d) => d.table)
        .map((d) => [`254:${d.minor}`, Number(d.table?.split(" ")[1])] as const),
    );

  private infoBlock(d: FakeDevice): string {
    const state = d.suspended ? "SUSPENDED" : "ACTIVE" + (d.deferredRemove ? " (DEFERRED REMOVE)" : "");
    return [
      `Name:              ${d.name}`,
      `State:             ${state}`,
      `Read Ahead:        256`,
      `Tables present:    LIVE`,
      `Open count:        ${d.openCount}`,
      `Event number:      0`,
      `Major, minor:      254, ${d.minor}`,
      `Number of targets: 1`,
      ...(d.uuid ? [`UUID: ${d.uuid}`] : []),
    ].join("\n");
  }

  private statusLine(d: FakeDevice): string {
    const [start, length, target] = d.table.split(" ");
    if (target === "thin-pool" && this.poolMode === "Fail") return `${start} ${length} thin-pool Fail`;
    if (target === "thin-pool") {
      return `${start} ${length} thin-pool ${this.transactionId} ${this.metadataUsedBlocks}/${this.metadataTotalBlocks} ${this.dataUsedBlocks}/${this.dataTotalBlocks} - ${this.poolMode} discard_passdown error_if_no_space - 1024`;
    }
    if (d.failed) return `${start} ${length} thin Fail`;
    const highest = d.mappedSectors === 0 ? "-" : String(d.mappedSectors - 1);
    return `${start} ${length} thin ${d.mappedSectors} ${highest}`;
  }

  /** The pool's device number as the fake reports it, for thin tables. */
  get poolDevno(): string {
    return `254:${this.devices.get(this.poolName)?.minor}`;
  }
}

export const silentLogger = {
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

export function recordingLogger(): {
  lines: { level: string; fields: object; message: string }[];
  info: (f: object, m: string) => void;
  warn: (f: object, m: string) => void;
  error: (f: object, m: string) => void;
} {
  const lines: { level: string; fields: object; message: string }[] = [];
  return {
    lines,
    info: (fields, message) => lines.push({ level: "info", fields, message }),
    warn: (fields, message) => lines.push({ level: "warn", fields, message }),
    error: (fields, message) => lines.push({ level: "error", fields, message }),
  };
}

/** An engine on the fake kernel's pool "pool0" (named "p"), with no status cache unless `extra` sets one. */
export function openFakeEngine(
  kernel: FakeKernel,
  store: StateStore,
  extra: Partial<EngineOptions> = {},
): Promise<ThinPoolEngine> {
  return ThinPoolEngine.open({
    store,
    runner: kernel,
    sectorsOf: kernel.sectorsOf,
    allSectors: kernel.allSectors,
    logger: silentLogger,
    pools: [{ name: "p", source: { type: "existing", device: "pool0" } }],
    statusTtlMs: 0,
    ...extra,
  });
}

/** dmsetup's concise format: `name,uuid,minor,flags,table` per device, devices split by `;`; a backslash quotes the next character. */
export function parseConcise(text: string): string[][] {
  const devices: string[][] = [];
  let fields: string[] = [];
  let field = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (c === "\\") field += text[++i] ?? "";
    else if (c === ",") {
      fields.push(field);
      field = "";
    } else if (c === ";") {
      devices.push([...fields, field]);
      fields = [];
      field = "";
    } else field += c;
  }
  devices.push([...fields, field]);
  return devices;
}
