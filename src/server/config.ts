/**
 * `thinpool-csi serve` configuration: flags, environment and the --config file, exactly as
 * docs/CONFIGURATION.md describes them. Every bad value is reported (all of them at once, one line
 * each, naming where it came from) before anything starts.
 *
 * Precedence: flag > environment variable > per-node entry of the config file > config file > default.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import type { LevelWithSilent } from "pino";
import { createRequire } from "node:module";

import { parseDuration } from "../util/duration.js";
import { errorMessage } from "../util/errors.js";
import { formatSize, parseSize } from "../util/size.js";
import { parseUnixEndpoint } from "./endpoint.js";
import { LOG_LEVELS } from "./logger.js";

/**
 * The YAML parser, loaded on first use: only a --config file needs it, and loading it costs ~150 ms on a
 * workstation (seconds in the test VM) of every start. Synchronous, as the whole configuration is.
 */
function parseYaml(text: string): unknown {
  const yaml = createRequire(import.meta.url)("yaml") as typeof import("yaml");
  return yaml.parse(text);
}

export type FsType = "ext4" | "xfs";
export const FS_TYPES: readonly FsType[] = ["ext4", "xfs"];

/** An existing thin-pool dm device, e.g. an LVM thin pool (`vg0-pool0-tpool`). */
export interface ExistingPoolSource {
  readonly type: "existing";
  /** dm name or /dev/mapper path, as configured. */
  readonly device: string;
}

/** The driver assembles a pool from two block devices. */
export interface DevicesPoolSource {
  readonly type: "devices";
  readonly data: string;
  readonly metadata: string;
  readonly blockSizeBytes: number;
}

/** Loop files in the state directory (development only). */
export interface LoopPoolSource {
  readonly type: "loop";
  readonly dataSizeBytes: number;
  readonly metadataSizeBytes: number;
  readonly blockSizeBytes: number;
}

export type PoolSourceConfig = ExistingPoolSource | DevicesPoolSource | LoopPoolSource;

export interface PoolConfig {
  readonly name: string;
  readonly source: PoolSourceConfig;
}

export interface MetricsAddress {
  /** undefined: all interfaces (the `:9810` form). */
  readonly host: string | undefined;
  readonly port: number;
}

/** Percent of a pool's space in use at which the driver warns (log, Node Event, metric level). */
export interface PressureThresholds {
  readonly warningPercent: number;
  readonly criticalPercent: number;
}

export interface PoolPressureConfig {
  readonly data: PressureThresholds;
  readonly metadata: PressureThresholds;
}

export interface DriverConfig {
  /** The endpoint as given, e.g. "unix:///csi/csi.sock". */
  readonly endpoint: string;
  /** The socket file it names. */
  readonly socketPath: string;
  /** Mode of the socket file, e.g. 0o600. */
  readonly socketMode: number;
  /** Kubernetes node name; this node's topology value. */
  readonly nodeId: string;
  readonly driverName: string;
  readonly stateDir: string;
  /** The --config file, if one was given. */
  readonly configFile: string | undefined;
  /** The pools of this node (per-node overrides already applied); at least one. */
  readonly pools: readonly PoolConfig[];
  readonly overProvisioningRatio: number;
  readonly reservedDataPercent: number;
  readonly reservedMetadataPercent: number;
  /** Thin ids each pool keeps created ahead of CreateVolume. */
  readonly spareThinIds: number;
  readonly poolPressure: PoolPressureConfig;
  readonly defaultFsType: FsType;
  readonly kubeletDir: string;
  /** 0: no limit. */
  readonly maxVolumesPerNode: number;
  /** undefined: metrics disabled (`--metrics-address ""`). */
  readonly metricsAddress: MetricsAddress | undefined;
  readonly logLevel: LevelWithSilent;
  /** How long a graceful shutdown waits for in-flight calls. */
  readonly shutdownTimeoutMs: number;
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";

  constructor(readonly problems: readonly string[]) {
    super(problems.join("\n"));
  }
}

/** dm-thin: data block size between 64 KiB and 1 GiB and a multiple of 64 KiB. */
export const MIN_BLOCK_SIZE_BYTES = 64 * 1024;
export const MAX_BLOCK_SIZE_BYTES = 1024 * 1024 * 1024;
export const DEFAULT_BLOCK_SIZE_BYTES = MIN_BLOCK_SIZE_BYTES;
/** dm-thin uses at most ~15.9 GiB of metadata; 2 MiB is the smallest LVM allows. */
export const MIN_METADATA_SIZE_BYTES = 2 * 1024 * 1024;
export const MAX_METADATA_SIZE_BYTES = 16 * 1024 * 1024 * 1024;
const SECTOR_BYTES = 512;

interface FlagSpec {
  readonly env?: string;
  /** undefined: no default (required or optional, see the validation). */
  readonly default?: string;
  readonly help: string;
}

/** The flags of `serve`: one table for parsing, environment variables, defaults and --help. */
export const SERVE_FLAGS = {
  endpoint: { env: "CSI_ENDPOINT", default: "unix:///csi/csi.sock", help: "gRPC endpoint (unix socket)" },
  "socket-mode": { default: "0600", help: "mode of the socket file" },
  "node-id": { env: "NODE_NAME", help: "Kubernetes node name; topology value (required)" },
  "driver-name": { env: "DRIVER_NAME", default: "thinpool.csi.dev", help: "CSI driver name (<= 63 chars)" },
  "state-dir": { env: "STATE_DIR", default: "/var/lib/thinpool-csi", help: "SQLite state and loop files" },
  config: { env: "THINPOOL_CSI_CONFIG", help: "JSON or YAML file with pools (and per-node overrides)" },
  pool: { help: "one pool inline: name=NAME,type=existing|devices|loop,<source keys>" },
  "over-provisioning-ratio": { default: "10", help: "max sum of virtual sizes / pool data size" },
  "reserved-data-percent": { default: "10", help: "data space kept free; creates refused below it" },
  "reserved-metadata-percent": { default: "10", help: "metadata space kept free" },
  "pool-data-warning-percent": {
    default: "80",
    help: "pool data use that raises a warning (log, Node Event)",
  },
  "pool-data-critical-percent": { default: "90", help: "pool data use that is critical" },
  "pool-metadata-warning-percent": { default: "80", help: "pool metadata use that raises a warning" },
  "pool-metadata-critical-percent": { default: "90", help: "pool metadata use that is critical" },
  "default-fs-type": { default: "ext4", help: "fs type when the request names none (ext4, xfs)" },
  "kubelet-dir": {
    env: "KUBELET_DIR",
    default: "/var/lib/kubelet",
    help: "node paths outside it are refused",
  },
  "max-volumes-per-node": { default: "0", help: "reported in NodeGetInfo (0: no limit)" },
  "spare-thin-ids": {
    default: "8",
    help: "thin ids each pool keeps created ahead of CreateVolume (0: none)",
  },
  "metrics-address": { default: ":9810", help: 'Prometheus metrics HTTP address ("" disables)' },
  "log-level": { env: "LOG_LEVEL", default: "info", help: `pino level (${LOG_LEVELS.join(", ")})` },
  "shutdown-timeout": {
    default: "60s",
    help: "how long SIGTERM waits for in-flight calls before exiting anyway",
  },
} as const satisfies Record<string, FlagSpec>;

export type ServeFlag = keyof typeof SERVE_FLAGS;

export function serveUsage(): string {
  const lines = ["Usage: thinpool-csi serve [flags]", "", "Flags (environment variable in brackets):"];
  for (const [flag, spec] of Object.entries(SERVE_FLAGS) as Array<[ServeFlag, FlagSpec]>) {
    const env = spec.env === undefined ? "" : ` [${spec.env}]`;
    const defaultText = spec.default === undefined ? "" : ` (default ${JSON.stringify(spec.default)})`;
    lines.push(`  --${flag}${env}${defaultText}`, `      ${spec.help}`);
  }
  return lines.join("\n");
}

/** A raw value and where it came from, so a message can say which flag, variable or file key is wrong. */
interface Sourced {
  readonly value: unknown;
  readonly label: string;
}

class Problems {
  readonly list: string[] = [];

  add(message: string): void {
    this.list.push(message);
  }
}

export interface ParsedServeArgs {
  readonly help: boolean;
  readonly config?: DriverConfig;
}

export interface ConfigSources {
  readonly env?: NodeJS.ProcessEnv;
  /** Reads the --config file; tests may replace it. */
  readonly readFile?: (file: string) => string;
}

/**
 * Parses `serve`'s arguments (without the subcommand) and the environment into a validated
 * {@link DriverConfig}. Throws {@link ConfigError} listing every problem found. `help: true` when
 * -h/--help was given (no validation then).
 */
export function parseServeArgs(argv: readonly string[], sources: ConfigSources = {}): ParsedServeArgs {
  const env = sources.env ?? process.env;
  const readFile = sources.readFile ?? ((file: string) => readFileSync(file, "utf8"));

  const options = Object.fromEntries(
    Object.keys(SERVE_FLAGS).map((flag) => [flag, { type: "string" as const, multiple: flag === "pool" }]),
  );
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: { ...options, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new ConfigError([describeParseArgsError(error)]);
  }
  if (values.help === true) {
    return { help: true };
  }

  const problems = new Problems();

  /** flag > env > (caller's fallback) > default. Empty environment variables count as unset. */
  const setting = (flag: ServeFlag): Sourced | undefined => {
    const fromFlag = values[flag];
    if (typeof fromFlag === "string") {
      return { value: fromFlag, label: `--${flag}` };
    }
    const spec: FlagSpec = SERVE_FLAGS[flag];
    if (spec.env !== undefined) {
      const fromEnv = env[spec.env];
      if (fromEnv !== undefined && fromEnv !== "") {
        return { value: fromEnv, label: `${spec.env} (environment, for --${flag})` };
      }
    }
    return undefined;
  };
  const withDefault = (flag: ServeFlag, fallback?: Sourced): Sourced => {
    const spec: FlagSpec = SERVE_FLAGS[flag];
    return setting(flag) ?? fallback ?? { value: spec.default ?? "", label: `--${flag}` };
  };
  /** A warning/critical pair: each a percent in (0, 100], the warning below the critical level. */
  const readThresholds = (warningFlag: ServeFlag, criticalFlag: ServeFlag): PressureThresholds => {
    const before = problems.list.length;
    const warning = withDefault(warningFlag);
    const critical = withDefault(criticalFlag);
    const warningPercent = readNumber(warning, PRESSURE_PERCENT_RULE, problems);
    const criticalPercent = readNumber(critical, PRESSURE_PERCENT_RULE, problems);
    if (problems.list.length === before && warningPercent >= criticalPercent) {
      problems.add(
        `${warning.label} (${warningPercent}) must be below ${critical.label} (${criticalPercent}): the warning comes before the critical level`,
      );
    }
    return { warningPercent, criticalPercent };
  };

  // Endpoint and socket.
  const endpointSetting = withDefault("endpoint");
  const endpoint = String(endpointSetting.value);
  let socketPath = "";
  try {
    socketPath = parseUnixEndpoint(endpoint);
  } catch (error) {
    problems.add(`${endpointSetting.label}: ${errorMessage(error)}`);
  }
  const socketMode = readSocketMode(withDefault("socket-mode"), problems);

  // Identity of this node and driver.
  const nodeSetting = setting("node-id");
  let nodeId = "";
  if (nodeSetting === undefined) {
    problems.add(
      "--node-id (or NODE_NAME) is required: the Kubernetes node name, usually NODE_NAME from the downward API (spec.nodeName)",
    );
  } else {
    nodeId = readTopologyValue(nodeSetting, problems);
  }
  const driverName = readDriverName(withDefault("driver-name"), problems);

  const stateDir = readAbsolutePath(withDefault("state-dir"), problems);
  const kubeletDir = readAbsolutePath(withDefault("kubelet-dir"), problems);

  // The config file, then this node's entry in it.
  const configSetting = setting("config");
  const configFile = configSetting === undefined ? undefined : String(configSetting.value);
  const file =
    configFile === undefined
      ? undefined
      : readConfigFile(configFile, configSetting?.label ?? "", readFile, problems);
  const nodeEntry = file?.nodes.get(nodeId);

  const fileSetting = (key: NumericFileKey): Sourced | undefined =>
    nodeEntry?.numbers[key] ?? file?.numbers[key];

  const overProvisioningRatio = readNumber(
    withDefault("over-provisioning-ratio", fileSetting("overProvisioningRatio")),
    RATIO_RULE,
    problems,
  );
  const reservedDataPercent = readNumber(
    withDefault("reserved-data-percent", fileSetting("reservedDataPercent")),
    PERCENT_RULE,
    problems,
  );
  const reservedMetadataPercent = readNumber(
    withDefault("reserved-metadata-percent", fileSetting("reservedMetadataPercent")),
    PERCENT_RULE,
    problems,
  );

  const poolPressure: PoolPressureConfig = {
    data: readThresholds("pool-data-warning-percent", "pool-data-critical-percent"),
    metadata: readThresholds("pool-metadata-warning-percent", "pool-metadata-critical-percent"),
  };

  const defaultFsType = readChoice(withDefault("default-fs-type"), FS_TYPES, problems);
  const spareThinIds = readNumber(
    withDefault("spare-thin-ids"),
    { min: 0, max: 1024, integer: true },
    problems,
  );
  const maxVolumesPerNode = readNumber(
    withDefault("max-volumes-per-node"),
    { min: 0, integer: true },
    problems,
  );
  const metricsAddress = readMetricsAddress(withDefault("metrics-address"), problems);
  const logLevel = readChoice(withDefault("log-level"), LOG_LEVELS, problems);
  const shutdownTimeoutMs = readDurationSetting(withDefault("shutdown-timeout"), problems);

  // Pools: --pool > nodes.<node>.pools > pools. A chosen source with bad entries has reported them already.
  let pools: readonly PoolConfig[] = [];
  const inlinePools = values.pool;
  if (Array.isArray(inlinePools) && inlinePools.length > 0) {
    if (inlinePools.length > 1) {
      problems.add("--pool may be given only once (configure several pools with --config)");
    }
    const parsed = parseInlinePool(String(inlinePools[0]), problems);
    const pool = parsed === undefined ? undefined : readPool(parsed, "--pool", problems);
    pools = pool === undefined ? [] : [pool];
  } else if (nodeEntry?.pools !== undefined) {
    pools = nodeEntry.pools;
  } else if (file?.pools !== undefined) {
    pools = file.pools;
  } else if (configFile === undefined || file !== undefined) {
    const node = nodeId === "" ? "<node>" : nodeId;
    problems.add(
      `no pool configured for node '${node}': give --pool name=...,type=..., or pools (or nodes.${node}.pools) in the --config file`,
    );
  }

  if (problems.list.length > 0) {
    throw new ConfigError(problems.list);
  }
  return {
    help: false,
    config: {
      endpoint,
      socketPath,
      socketMode,
      nodeId,
      driverName,
      stateDir,
      configFile,
      pools,
      overProvisioningRatio,
      reservedDataPercent,
      reservedMetadataPercent,
      spareThinIds,
      poolPressure,
      defaultFsType,
      kubeletDir,
      maxVolumesPerNode,
      metricsAddress,
      logLevel,
      shutdownTimeoutMs,
    },
  };
}

function describeParseArgsError(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  const message = errorMessage(error).split("\n")[0] ?? "";
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `${message} (see thinpool-csi serve --help)`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `${message} (flags are --name value or --name=value; see thinpool-csi serve --help)`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return `${message} (a value that starts with '-' must be written --name=-value)`;
    default:
      return message;
  }
}

// ---------------------------------------------------------------------------------------------------
// Scalar readers. Each returns a usable placeholder after recording a problem, so that every problem
// is found in one pass.

function display(value: unknown): string {
  return typeof value === "string" ? `'${value}'` : (JSON.stringify(value) ?? String(value));
}

const NUMBER_TEXT = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/;

interface NumberRule {
  readonly min: number;
  /** Exclusive lower bound (instead of min). */
  readonly aboveMin?: boolean;
  /** Exclusive upper bound. */
  readonly belowMax?: number;
  /** Inclusive upper bound. */
  readonly max?: number;
  readonly integer?: boolean;
}

function readNumber(setting: Sourced, rule: NumberRule, problems: Problems): number {
  const { value, label } = setting;
  let parsed = Number.NaN;
  if (typeof value === "number") {
    parsed = value;
  } else if (typeof value === "string" && NUMBER_TEXT.test(value.trim())) {
    parsed = Number(value.trim());
  }
  const kind = rule.integer === true ? "an integer" : "a number";
  const lower = rule.aboveMin === true ? `> ${rule.min}` : `>= ${rule.min}`;
  const upper =
    rule.belowMax !== undefined
      ? ` and < ${rule.belowMax}`
      : rule.max !== undefined
        ? ` and <= ${rule.max}`
        : "";
  const range = `${lower}${upper}`;
  if (
    !Number.isFinite(parsed) ||
    parsed < rule.min ||
    (rule.aboveMin === true && parsed === rule.min) ||
    (rule.belowMax !== undefined && parsed >= rule.belowMax) ||
    (rule.max !== undefined && parsed > rule.max) ||
    (rule.integer === true && !Number.isInteger(parsed))
  ) {
    problems.add(`${label} must be ${kind} ${range}, got ${display(value)}`);
    return rule.min;
  }
  return parsed;
}

function readChoice<T extends string>(setting: Sourced, choices: readonly T[], problems: Problems): T {
  const found = choices.find((choice) => choice === setting.value);
  if (found === undefined) {
    problems.add(`${setting.label} must be one of ${choices.join(", ")}, got ${display(setting.value)}`);
    return choices[0] as T;
  }
  return found;
}

function readSocketMode(setting: Sourced, problems: Problems): number {
  const text = String(setting.value).trim();
  const match = /^(?:0o?)?([0-7]{3})$/.exec(text);
  if (match === null) {
    problems.add(
      `${setting.label} must be an octal file mode such as 0600 or 0660, got ${display(setting.value)}`,
    );
    return 0o600;
  }
  return Number.parseInt(match[1] as string, 8);
}

/** CSI: topology values are <= 63 chars, alphanumeric at both ends, '-', '_', '.' between. */
const TOPOLOGY_VALUE = /^[A-Za-z0-9](?:[-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?$/;

function readTopologyValue(setting: Sourced, problems: Problems): string {
  const value = String(setting.value);
  if (!TOPOLOGY_VALUE.test(value)) {
    problems.add(
      `${setting.label} must be 63 characters or less, begin and end with a letter or digit and contain only letters, digits, '-', '_' or '.' (it is this node's CSI topology value), got ${display(value)}`,
    );
  }
  return value;
}

/** CSI GetPluginInfo: domain name notation, <= 63 chars, alphanumeric at both ends, '-' and '.' between. */
const DRIVER_NAME = /^[A-Za-z0-9](?:[-.A-Za-z0-9]{0,61}[A-Za-z0-9])?$/;

function readDriverName(setting: Sourced, problems: Problems): string {
  const value = String(setting.value);
  if (value.length > 63) {
    problems.add(`${setting.label} must be 63 characters or less, got ${value.length}: ${display(value)}`);
  } else if (!DRIVER_NAME.test(value)) {
    problems.add(
      `${setting.label} must be a domain-style name (letters, digits, '-' and '.', beginning and ending with a letter or digit), got ${display(value)}`,
    );
  }
  return value;
}

function readAbsolutePath(setting: Sourced, problems: Problems): string {
  const value = String(setting.value);
  if (value === "" || !path.isAbsolute(value)) {
    problems.add(`${setting.label} must be an absolute path, got ${display(value)}`);
    return value;
  }
  return path.normalize(value).replace(/(.)\/+$/, "$1");
}

function readMetricsAddress(setting: Sourced, problems: Problems): MetricsAddress | undefined {
  const value = String(setting.value).trim();
  if (value === "") {
    return undefined;
  }
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]]*)):(\d{1,5})$/.exec(value);
  const port = match === null ? Number.NaN : Number(match[3]);
  if (match === null || port < 1 || port > 65535) {
    problems.add(
      `${setting.label} must be [host]:port with a port from 1 to 65535 (e.g. :9810 or 127.0.0.1:9810), or "" to disable metrics, got ${display(setting.value)}`,
    );
    return undefined;
  }
  const host = match[1] ?? match[2];
  return { host: host === "" ? undefined : host, port };
}

function readDurationSetting(setting: Sourced, problems: Problems): number {
  try {
    return parseDuration(String(setting.value));
  } catch (error) {
    problems.add(`${setting.label}: ${errorMessage(error)}`);
    return 0;
  }
}

function readSize(setting: Sourced, problems: Problems): number | undefined {
  const { value, label } = setting;
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) {
    return value;
  }
  if (typeof value !== "string") {
    problems.add(`${label} must be a size such as 20Gi or 256Mi, got ${display(value)}`);
    return undefined;
  }
  try {
    return parseSize(value);
  } catch (error) {
    problems.add(`${label}: ${errorMessage(error)}`);
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------
// Pools.

/** Pool names appear in StorageClass parameters and device names: a DNS label. */
const POOL_NAME = /^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$/;

const SOURCE_KEYS: Readonly<Record<PoolSourceConfig["type"], readonly string[]>> = {
  existing: ["type", "device"],
  devices: ["type", "data", "metadata", "blockSize"],
  loop: ["type", "dataSize", "metadataSize", "blockSize"],
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function checkKeys(
  object: Record<string, unknown>,
  allowed: readonly string[],
  where: string,
  problems: Problems,
): void {
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) {
      problems.add(`${where}: unknown key '${key}' (allowed: ${allowed.join(", ")})`);
    }
  }
}

/** `name=default,type=loop,dataSize=20Gi,metadataSize=256Mi` -> the shape of a `pools` entry. */
function parseInlinePool(text: string, problems: Problems): Record<string, unknown> | undefined {
  const flat: Record<string, string> = {};
  let ok = true;
  for (const part of text.split(",")) {
    const trimmed = part.trim();
    if (trimmed === "") {
      continue;
    }
    const eq = trimmed.indexOf("=");
    if (eq <= 0) {
      problems.add(
        `--pool: '${trimmed}' is not key=value (expected e.g. name=default,type=existing,device=vg0-pool0-tpool)`,
      );
      ok = false;
      continue;
    }
    // "source.type=loop" is accepted too, mirroring the nesting of the config file.
    const key = trimmed
      .slice(0, eq)
      .trim()
      .replace(/^source\./, "");
    if (key in flat) {
      problems.add(`--pool: key '${key}' is given twice`);
      ok = false;
    }
    flat[key] = trimmed.slice(eq + 1).trim();
  }
  if (!ok) {
    return undefined;
  }
  const { name, ...source } = flat;
  const pool: Record<string, unknown> = { source };
  if (name !== undefined) {
    pool.name = name;
  }
  return pool;
}

function readPool(raw: unknown, where: string, problems: Problems): PoolConfig | undefined {
  if (!isRecord(raw)) {
    problems.add(`${where} must be a mapping with name and source, got ${display(raw)}`);
    return undefined;
  }
  checkKeys(raw, ["name", "source"], where, problems);
  const before = problems.list.length;
  const name = raw.name;
  if (typeof name !== "string" || !POOL_NAME.test(name)) {
    problems.add(
      `${where}.name must be 1-63 lowercase letters, digits or '-' (beginning and ending with a letter or digit), got ${display(name)}`,
    );
  }
  const source = raw.source;
  const sourceWhere = `${where}.source`;
  if (!isRecord(source)) {
    problems.add(
      `${sourceWhere} must be a mapping with a type (existing, devices or loop), got ${display(source)}`,
    );
    return undefined;
  }
  const type = source.type;
  if (type !== "existing" && type !== "devices" && type !== "loop") {
    problems.add(`${sourceWhere}.type must be one of existing, devices, loop, got ${display(type)}`);
    return undefined;
  }
  checkKeys(source, SOURCE_KEYS[type], `${sourceWhere} (type ${type})`, problems);

  let parsed: PoolSourceConfig | undefined;
  switch (type) {
    case "existing": {
      const device = source.device;
      if (typeof device !== "string" || device.trim() === "" || /\s/.test(device)) {
        problems.add(
          `${sourceWhere}.device must be a dm device name or /dev/mapper path, got ${display(device)}`,
        );
      } else if (device.includes("/") && !path.isAbsolute(device)) {
        problems.add(
          `${sourceWhere}.device must be a dm name (no '/') or an absolute path, got ${display(device)}`,
        );
      } else {
        parsed = { type, device };
      }
      break;
    }
    case "devices": {
      const data = readDevicePath({ value: source.data, label: `${sourceWhere}.data` }, problems);
      const metadata = readDevicePath({ value: source.metadata, label: `${sourceWhere}.metadata` }, problems);
      const blockSizeBytes = readBlockSize(source.blockSize, `${sourceWhere}.blockSize`, problems);
      if (data !== undefined && data === metadata) {
        problems.add(`${sourceWhere}: data and metadata must be different devices, both are '${data}'`);
      }
      if (data !== undefined && metadata !== undefined && blockSizeBytes !== undefined) {
        parsed = { type, data, metadata, blockSizeBytes };
      }
      break;
    }
    case "loop": {
      const blockSizeBytes = readBlockSize(source.blockSize, `${sourceWhere}.blockSize`, problems);
      const dataSizeBytes = readRequiredSize(source.dataSize, `${sourceWhere}.dataSize`, problems);
      const metadataSizeBytes = readRequiredSize(
        source.metadataSize,
        `${sourceWhere}.metadataSize`,
        problems,
      );
      if (dataSizeBytes !== undefined && blockSizeBytes !== undefined && dataSizeBytes < blockSizeBytes) {
        problems.add(
          `${sourceWhere}.dataSize must be at least one block (${formatSize(blockSizeBytes)}), got ${formatSize(dataSizeBytes)}`,
        );
      }
      if (
        metadataSizeBytes !== undefined &&
        (metadataSizeBytes < MIN_METADATA_SIZE_BYTES || metadataSizeBytes > MAX_METADATA_SIZE_BYTES)
      ) {
        problems.add(
          `${sourceWhere}.metadataSize must be between ${formatSize(MIN_METADATA_SIZE_BYTES)} and ${formatSize(MAX_METADATA_SIZE_BYTES)}, got ${display(source.metadataSize)}`,
        );
      }
      if (dataSizeBytes !== undefined && metadataSizeBytes !== undefined && blockSizeBytes !== undefined) {
        parsed = { type, dataSizeBytes, metadataSizeBytes, blockSizeBytes };
      }
      break;
    }
  }
  if (parsed === undefined || problems.list.length > before || typeof name !== "string") {
    return undefined;
  }
  return { name, source: parsed };
}

function readDevicePath(setting: Sourced, problems: Problems): string | undefined {
  if (typeof setting.value !== "string" || !path.isAbsolute(setting.value)) {
    problems.add(
      `${setting.label} must be an absolute device path such as /dev/disk/by-id/..., got ${display(setting.value)}`,
    );
    return undefined;
  }
  return setting.value;
}

function readRequiredSize(value: unknown, label: string, problems: Problems): number | undefined {
  if (value === undefined) {
    problems.add(`${label} is required (a size such as 20Gi)`);
    return undefined;
  }
  const bytes = readSize({ value, label }, problems);
  if (bytes !== undefined && (bytes === 0 || bytes % SECTOR_BYTES !== 0)) {
    problems.add(`${label} must be a positive multiple of 512 bytes (whole sectors), got ${display(value)}`);
    return undefined;
  }
  return bytes;
}

function readBlockSize(value: unknown, label: string, problems: Problems): number | undefined {
  if (value === undefined) {
    return DEFAULT_BLOCK_SIZE_BYTES;
  }
  const bytes = readSize({ value, label }, problems);
  if (bytes === undefined) {
    return undefined;
  }
  if (bytes < MIN_BLOCK_SIZE_BYTES || bytes > MAX_BLOCK_SIZE_BYTES || bytes % MIN_BLOCK_SIZE_BYTES !== 0) {
    problems.add(
      `${label} must be a multiple of 64Ki between 64Ki and 1Gi (a dm-thin limit), got ${display(value)}`,
    );
    return undefined;
  }
  return bytes;
}

function readPoolList(raw: unknown, where: string, problems: Problems): PoolConfig[] {
  if (!Array.isArray(raw) || raw.length === 0) {
    problems.add(`${where} must be a non-empty list of pools, got ${display(raw)}`);
    return [];
  }
  const pools: PoolConfig[] = [];
  raw.forEach((entry: unknown, index: number) => {
    const pool = readPool(entry, `${where}[${index}]`, problems);
    if (pool !== undefined) {
      if (pools.some((existing) => existing.name === pool.name)) {
        problems.add(`${where}[${index}].name '${pool.name}' is used by another pool in the same list`);
      } else {
        pools.push(pool);
      }
    }
  });
  return pools;
}

// ---------------------------------------------------------------------------------------------------
// The config file.

const NUMERIC_FILE_KEYS = [
  "overProvisioningRatio",
  "reservedDataPercent",
  "reservedMetadataPercent",
] as const;
type NumericFileKey = (typeof NUMERIC_FILE_KEYS)[number];

const RATIO_RULE: NumberRule = { min: 1 };
const PERCENT_RULE: NumberRule = { min: 0, belowMax: 100 };
const PRESSURE_PERCENT_RULE: NumberRule = { min: 0, aboveMin: true, max: 100 };
const NUMERIC_FILE_RULES: Readonly<Record<NumericFileKey, NumberRule>> = {
  overProvisioningRatio: RATIO_RULE,
  reservedDataPercent: PERCENT_RULE,
  reservedMetadataPercent: PERCENT_RULE,
};

interface FileSection {
  readonly numbers: Partial<Record<NumericFileKey, Sourced>>;
  readonly pools: PoolConfig[] | undefined;
}

interface ConfigFileContents extends FileSection {
  readonly nodes: ReadonlyMap<string, FileSection>;
}

function readConfigFile(
  file: string,
  label: string,
  readFile: (file: string) => string,
  problems: Problems,
): ConfigFileContents | undefined {
  let text: string;
  try {
    text = readFile(file);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    problems.add(
      code === "ENOENT"
        ? `${label}: config file '${file}' does not exist`
        : `${label}: cannot read config file '${file}': ${errorMessage(error)}`,
    );
    return undefined;
  }
  let document: unknown;
  try {
    // YAML 1.2 reads JSON too; JSON.parse for .json files gives JSON-specific error positions.
    document = file.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    problems.add(
      `config file '${file}' is not valid ${file.endsWith(".json") ? "JSON" : "YAML"}: ${errorMessage(error)}`,
    );
    return undefined;
  }
  if (document === null || document === undefined) {
    document = {};
  }
  if (!isRecord(document)) {
    problems.add(`config file '${file}' must hold a mapping (pools, nodes, ...), got ${display(document)}`);
    return undefined;
  }
  const prefix = `config file '${file}'`;
  checkKeys(document, [...NUMERIC_FILE_KEYS, "pools", "nodes"], prefix, problems);

  const readSection = (section: Record<string, unknown>, where: string): FileSection => {
    const numbers: Partial<Record<NumericFileKey, Sourced>> = {};
    for (const key of NUMERIC_FILE_KEYS) {
      if (section[key] !== undefined) {
        const sourced = { value: section[key], label: `${prefix}: ${where}${key}` };
        // Validated here, in every section, and kept only when valid so it is not reported twice.
        const before = problems.list.length;
        readNumber(sourced, NUMERIC_FILE_RULES[key], problems);
        if (problems.list.length === before) {
          numbers[key] = sourced;
        }
      }
    }
    let pools: PoolConfig[] | undefined;
    if (section.pools !== undefined) {
      pools = readPoolList(section.pools, `${prefix}: ${where}pools`, problems);
    }
    return { numbers, pools };
  };

  const top = readSection(document, "");
  const nodes = new Map<string, FileSection>();
  if (document.nodes !== undefined) {
    if (!isRecord(document.nodes)) {
      problems.add(
        `${prefix}: nodes must be a mapping of node name to overrides, got ${display(document.nodes)}`,
      );
    } else {
      // Every node's entry is validated, not only this node's: the file is shared by all nodes, and a
      // mistake should surface on the first restart anywhere rather than on one node months later.
      for (const [node, entry] of Object.entries(document.nodes)) {
        if (!isRecord(entry)) {
          problems.add(
            `${prefix}: nodes.${node} must be a mapping (pools, overProvisioningRatio, ...), got ${display(entry)}`,
          );
          continue;
        }
        checkKeys(entry, [...NUMERIC_FILE_KEYS, "pools"], `${prefix}: nodes.${node}`, problems);
        nodes.set(node, readSection(entry, `nodes.${node}.`));
      }
    }
  }
  return { ...top, nodes };
}
