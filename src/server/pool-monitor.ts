/**
 * The driver's periodic view of its pools: status and usage read from the engine, and the pressure level
 * of data and metadata use against the configured thresholds. The metrics endpoint and the status command
 * read the latest view instead of asking device-mapper themselves, and a level change (not every refresh)
 * is reported to a listener that logs it and raises a Node Event.
 */
import type { PoolUsage } from "../thinpool/capacity.js";
import type { PoolStatus } from "../thinpool/status.js";
import { errorMessage } from "../util/errors.js";
import type { PoolPressureConfig, PressureThresholds } from "./config.js";

export type PressureLevel = "normal" | "warning" | "critical";
export const PRESSURE_LEVELS: readonly PressureLevel[] = ["normal", "warning", "critical"];
export type PoolResource = "data" | "metadata";
export const POOL_RESOURCES: readonly PoolResource[] = ["data", "metadata"];

/**
 * A level is left downwards only once use has fallen this many percentage points below its threshold, so
 * that use hovering at a threshold does not raise an Event at every refresh.
 */
export const PRESSURE_HYSTERESIS_PERCENT = 1;

export interface ResourcePressure {
  readonly level: PressureLevel;
  /** undefined while the pool cannot be read or has failed (the level then stays as it was). */
  readonly usedPercent: number | undefined;
}

export interface PoolView {
  readonly pool: string;
  /** When the engine was asked (ms since the epoch). */
  readonly readAt: number;
  readonly status: PoolStatus | undefined;
  readonly usage: PoolUsage | undefined;
  /** Why status/usage are missing. */
  readonly error: string | undefined;
  readonly pressure: Readonly<Record<PoolResource, ResourcePressure>>;
}

export interface PressureChange {
  readonly pool: string;
  readonly resource: PoolResource;
  readonly from: PressureLevel;
  readonly to: PressureLevel;
  readonly usedPercent: number;
  readonly thresholds: PressureThresholds;
}

/** What the monitor needs of the engine. */
export interface PoolReader {
  readonly poolNames: readonly string[];
  poolStatus(pool: string): Promise<PoolStatus>;
  poolUsage(pool: string): Promise<PoolUsage>;
}

/** The level for `usedPercent`, given the level before (for the hysteresis on the way down). */
export function pressureLevel(
  usedPercent: number,
  thresholds: PressureThresholds,
  previous: PressureLevel,
): PressureLevel {
  const reached = (threshold: number, level: PressureLevel): boolean =>
    usedPercent >= threshold ||
    (PRESSURE_LEVELS.indexOf(previous) >= PRESSURE_LEVELS.indexOf(level) &&
      usedPercent > threshold - PRESSURE_HYSTERESIS_PERCENT);
  if (reached(thresholds.criticalPercent, "critical")) return "critical";
  if (reached(thresholds.warningPercent, "warning")) return "warning";
  return "normal";
}

function percent(used: number, total: number): number | undefined {
  return total > 0 ? (used / total) * 100 : undefined;
}

export class PoolMonitor {
  private views = new Map<string, PoolView>();
  private refreshing: Promise<PoolView[]> | undefined;

  constructor(
    private readonly reader: PoolReader,
    readonly thresholds: PoolPressureConfig,
    private readonly onChange: (change: PressureChange) => void,
  ) {}

  /** Reads every pool now (concurrent callers share one read) and reports level changes. */
  refresh(): Promise<PoolView[]> {
    this.refreshing ??= this.readAll().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** The latest view of every pool, read again first when the oldest is older than `maxAgeMs`. */
  async current(maxAgeMs: number): Promise<PoolView[]> {
    const now = Date.now();
    const views = this.reader.poolNames.map((pool) => this.views.get(pool));
    if (views.every((view) => view !== undefined && now - view.readAt <= maxAgeMs)) {
      return views as PoolView[];
    }
    return this.refresh();
  }

  private async readAll(): Promise<PoolView[]> {
    const views: PoolView[] = [];
    for (const pool of this.reader.poolNames) {
      const view = await this.read(pool);
      this.views.set(pool, view);
      views.push(view);
    }
    return views;
  }

  private async read(pool: string): Promise<PoolView> {
    const readAt = Date.now();
    const before = this.views.get(pool)?.pressure;
    let status: PoolStatus | undefined;
    let usage: PoolUsage | undefined;
    let error: string | undefined;
    try {
      status = await this.reader.poolStatus(pool);
      usage = await this.reader.poolUsage(pool);
    } catch (err) {
      error = errorMessage(err);
    }
    const used: Record<PoolResource, number | undefined> = {
      data: usage && status?.healthy ? percent(usage.dataUsedBytes, usage.dataBytes) : undefined,
      metadata: usage && status?.healthy ? percent(usage.metadataUsedBytes, usage.metadataBytes) : undefined,
    };
    const pressure = {} as Record<PoolResource, ResourcePressure>;
    for (const resource of POOL_RESOURCES) {
      const previous = before?.[resource].level ?? "normal";
      const usedPercent = used[resource];
      const thresholds = this.thresholds[resource];
      const level = usedPercent === undefined ? previous : pressureLevel(usedPercent, thresholds, previous);
      pressure[resource] = { level, usedPercent };
      if (level !== previous && usedPercent !== undefined) {
        this.onChange({ pool, resource, from: previous, to: level, usedPercent, thresholds });
      }
    }
    return { pool, readAt, status, usage, error, pressure };
  }
}

/** How a level change is told to operators: a Kubernetes Event on the Node and a log line. */
export interface PressureNotice {
  /** Event type: Warning while at warning or critical, Normal once back to normal. */
  readonly type: "Warning" | "Normal";
  /** e.g. ThinPoolDataCritical, ThinPoolMetadataWarning, ThinPoolDataNormal. */
  readonly reason: string;
  readonly message: string;
}

export function pressureNotice(change: PressureChange): PressureNotice {
  const resource = change.resource === "data" ? "Data" : "Metadata";
  const level = change.to.charAt(0).toUpperCase() + change.to.slice(1);
  const used = `${change.usedPercent.toFixed(1)}%`;
  const { warningPercent, criticalPercent } = change.thresholds;
  const rising = PRESSURE_LEVELS.indexOf(change.to) > PRESSURE_LEVELS.indexOf(change.from);
  let message: string;
  if (change.to === "normal") {
    message = `thin pool ${change.pool}: ${change.resource} use is back to ${used}, below the warning level of ${warningPercent}%`;
  } else if (rising) {
    const threshold = change.to === "critical" ? criticalPercent : warningPercent;
    const advice =
      change.resource === "data"
        ? "free space (delete volumes or snapshots) or grow the pool's data device"
        : "grow the pool's metadata device or delete snapshots";
    message = `thin pool ${change.pool}: ${change.resource} use ${used} has reached the ${change.to} level of ${threshold}%; ${advice} before it fills up`;
  } else {
    message = `thin pool ${change.pool}: ${change.resource} use fell to ${used}, below the critical level of ${criticalPercent}% but still at or above the warning level of ${warningPercent}%`;
  }
  return {
    type: change.to === "normal" ? "Normal" : "Warning",
    reason: `ThinPool${resource}${level}`,
    message,
  };
}
