/**
 * The driver's Prometheus metrics, in a private registry (not prom-client's global one, so two drivers in
 * one process, as in the tests, never share counters). Every series carries the `node` label.
 *
 * Pool gauges are filled at scrape time from the pool monitor's latest view (refreshed every few seconds
 * by the driver anyway), so a scrape does not run dmsetup while that view is fresh. RPC metrics come from
 * the gRPC pipeline ({@link RpcObserver}), suspend durations and the reconciliation report from the
 * engine ({@link EngineObserver}); neither of those knows about prom-client.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

import { RECONCILE_RESULTS, type EngineObserver } from "../thinpool/context.js";
import type { PoolPressureConfig } from "./config.js";
import type { RpcObserver } from "./pipeline.js";
import { POOL_RESOURCES, PRESSURE_LEVELS, type PoolView } from "./pool-monitor.js";

export const METRIC_PREFIX = "thinpool_csi_";

/** Device states always exported (as 0 when no device is in them), so alerts on them have a series. */
const ALWAYS_EXPORTED_STATES = ["active", "inactive", "faulty"] as const;

export const POOL_MODES = ["rw", "ro", "out_of_data_space", "failed"] as const;

/** What the pool gauges are read from, once the engine has started. */
export interface PoolMetricsSource {
  /** The pools' latest view (read again when stale). */
  pools(): Promise<PoolView[]>;
  /** Number of devices per lower-case state in a pool. */
  deviceCounts(pool: string): ReadonlyMap<string, number>;
  /** Ready spare thin ids in a pool. */
  spareThinIds(pool: string): number;
  readonly overProvisioningRatio: number;
  readonly thresholds: PoolPressureConfig;
}

export class DriverMetrics {
  readonly registry = new Registry();
  private poolSource: PoolMetricsSource | undefined;
  private readonly rpcRequests: Counter<"method" | "code">;
  private readonly rpcErrors: Counter<"method" | "code">;
  private readonly rpcDuration: Histogram<"method" | "code">;
  private readonly suspendDuration: Histogram<"pool">;
  private readonly reconcileDevices: Gauge<"result">;
  private readonly reconcileDuration: Gauge;
  private readonly reconcilePhase: Gauge<"phase">;
  private readonly reconcileTimestamp: Gauge;

  constructor(options: { readonly node: string }) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ node: options.node });
    collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });

    this.rpcRequests = new Counter({
      name: `${METRIC_PREFIX}rpc_requests_total`,
      help: "CSI calls answered, by method and gRPC status code",
      labelNames: ["method", "code"],
      registers,
    });
    this.rpcErrors = new Counter({
      name: `${METRIC_PREFIX}rpc_errors_total`,
      help: "CSI calls answered with a status other than OK, by method and gRPC status code",
      labelNames: ["method", "code"],
      registers,
    });
    this.rpcDuration = new Histogram({
      name: `${METRIC_PREFIX}rpc_duration_seconds`,
      help: "Time from receiving a CSI call to answering it, by method and gRPC status code",
      labelNames: ["method", "code"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    this.suspendDuration = new Histogram({
      name: `${METRIC_PREFIX}origin_suspend_seconds`,
      help: "How long an active volume's I/O was frozen (dm suspend) to take a snapshot of it",
      labelNames: ["pool"],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.reconcileDevices = new Gauge({
      name: `${METRIC_PREFIX}reconcile_devices`,
      help: "Devices counted by the last start-up reconciliation, by result (checked, reactivated, resumed, rolledForward, rolledBack, deactivated, quarantined, faulty)",
      labelNames: ["result"],
      registers,
    });
    this.reconcileDuration = new Gauge({
      name: `${METRIC_PREFIX}reconcile_duration_seconds`,
      help: "How long the last start-up reconciliation took",
      registers,
    });
    this.reconcilePhase = new Gauge({
      name: `${METRIC_PREFIX}reconcile_phase_seconds`,
      help: "Where the last start-up reconciliation's time went, by phase (listing, settling, reactivation, metadataCheck)",
      labelNames: ["phase"],
      registers,
    });
    this.reconcileTimestamp = new Gauge({
      name: `${METRIC_PREFIX}reconcile_timestamp_seconds`,
      help: "When the last start-up reconciliation finished (Unix time)",
      registers,
    });
    this.registerPoolGauges();
  }

  /** Starts exporting pool gauges (called once the engine has assembled its pools). */
  attachPools(source: PoolMetricsSource): void {
    this.poolSource = source;
  }

  readonly rpcObserver: RpcObserver = {
    onRpcFinished: ({ method, code, durationSeconds }) => {
      this.rpcRequests.inc({ method, code });
      if (code !== "OK") this.rpcErrors.inc({ method, code });
      this.rpcDuration.observe({ method, code }, durationSeconds);
    },
  };

  readonly engineObserver: EngineObserver = {
    onSuspend: ({ pool, frozenMs }) => this.suspendDuration.observe({ pool }, frozenMs / 1000),
    onReconcile: (report) => {
      for (const result of RECONCILE_RESULTS) this.reconcileDevices.set({ result }, report[result]);
      this.reconcileDuration.set(report.durationMs / 1000);
      for (const [phase, ms] of Object.entries(report.phasesMs))
        this.reconcilePhase.set({ phase }, ms / 1000);
      this.reconcileTimestamp.set(Date.now() / 1000);
    },
  };

  /** The text exposition format, and its content type. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  private registerPoolGauges(): void {
    const registers = [this.registry];
    const attachedSource = (): PoolMetricsSource | undefined => this.poolSource;
    /** A gauge whose series are set from the pools' view at each scrape. */
    const poolGauge = <Label extends string>(
      name: string,
      help: string,
      labelNames: readonly Label[],
      fill: (gauge: Gauge<Label>, views: PoolView[], source: PoolMetricsSource) => void,
    ): void => {
      new Gauge<Label>({
        name: `${METRIC_PREFIX}${name}`,
        help,
        labelNames,
        registers,
        async collect() {
          this.reset();
          const source = attachedSource();
          if (source) fill(this, await source.pools(), source);
        },
      });
    };
    const usageGauge = (name: string, help: string, value: (view: PoolView) => number | undefined) =>
      poolGauge(name, help, ["pool"], (gauge, views) => {
        for (const view of views) {
          const v = value(view);
          if (v !== undefined) gauge.set({ pool: view.pool }, v);
        }
      });

    usageGauge("pool_data_bytes", "Size of the pool's data space", (v) => v.usage?.dataBytes);
    usageGauge("pool_data_used_bytes", "Data space the pool has allocated", (v) => v.usage?.dataUsedBytes);
    usageGauge("pool_metadata_bytes", "Size of the pool's metadata space", (v) => v.usage?.metadataBytes);
    usageGauge(
      "pool_metadata_used_bytes",
      "Metadata space the pool has used",
      (v) => v.usage?.metadataUsedBytes,
    );
    usageGauge(
      "pool_provisioned_bytes",
      "Sum of the virtual sizes of the pool's volumes and snapshots",
      (v) => v.usage?.provisionedBytes,
    );
    usageGauge(
      "pool_provisionable_bytes",
      "Virtual size that can still be provisioned (over-provisioning limit and reserves applied; 0 when the pool refuses new volumes)",
      (v) => v.usage?.availableBytes,
    );
    usageGauge("pool_up", "1 when the pool's status could be read, 0 when not", (v) =>
      v.status === undefined ? 0 : 1,
    );
    usageGauge("pool_needs_check", "1 when the kernel flags the pool's metadata as needing a check", (v) =>
      v.status === undefined ? undefined : Number(v.status.needsCheck),
    );
    poolGauge(
      "pool_spare_thin_ids",
      "Thin ids made ahead so that CreateVolume needs no kernel call (none are made near the reserves)",
      ["pool"],
      (gauge, views, source) => {
        for (const view of views) gauge.set({ pool: view.pool }, source.spareThinIds(view.pool));
      },
    );
    poolGauge(
      "pool_over_provisioning_ratio",
      "Over-provisioning ratio in force: provisioned bytes may reach this multiple of the data size",
      ["pool"],
      (gauge, views, source) => {
        for (const view of views) gauge.set({ pool: view.pool }, source.overProvisioningRatio);
      },
    );
    poolGauge(
      "pool_mode",
      "1 for the pool's current mode (rw, ro, out_of_data_space, failed), 0 for the others",
      ["pool", "mode"],
      (gauge, views) => {
        for (const view of views) {
          if (!view.status) continue;
          const current = view.status.healthy ? view.status.mode : "failed";
          for (const mode of POOL_MODES) gauge.set({ pool: view.pool, mode }, Number(mode === current));
        }
      },
    );
    poolGauge(
      "pool_pressure_level",
      "Pressure level of data or metadata use: 0 normal, 1 warning, 2 critical",
      ["pool", "resource"],
      (gauge, views) => {
        for (const view of views) {
          for (const resource of POOL_RESOURCES) {
            gauge.set({ pool: view.pool, resource }, PRESSURE_LEVELS.indexOf(view.pressure[resource].level));
          }
        }
      },
    );
    poolGauge(
      "pool_pressure_threshold_ratio",
      "Configured use (0-1) at which data or metadata pressure becomes warning or critical",
      ["resource", "level"],
      (gauge, _views, source) => {
        for (const resource of POOL_RESOURCES) {
          const thresholds = source.thresholds[resource];
          gauge.set({ resource, level: "warning" }, thresholds.warningPercent / 100);
          gauge.set({ resource, level: "critical" }, thresholds.criticalPercent / 100);
        }
      },
    );
    poolGauge(
      "thin_devices",
      "Thin devices (volumes and snapshots) by state: active, inactive, faulty, and transitional states while an operation runs",
      ["pool", "state"],
      (gauge, views, source) => {
        for (const view of views) {
          const counts = new Map<string, number>(ALWAYS_EXPORTED_STATES.map((state) => [state, 0]));
          for (const [state, count] of source.deviceCounts(view.pool)) counts.set(state, count);
          for (const [state, count] of counts) gauge.set({ pool: view.pool, state }, count);
        }
      },
    );
  }
}
