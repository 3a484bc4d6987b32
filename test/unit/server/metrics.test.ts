import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { DriverMetrics } from "../../../src/server/metrics.js";
import type { PoolView } from "../../../src/server/pool-monitor.js";
import { parseExposition, sampleValue } from "../../support/prometheus-text.js";
import { repoPath } from "../../support/repo.js";

const THRESHOLDS = {
  data: { warningPercent: 80, criticalPercent: 90 },
  metadata: { warningPercent: 75, criticalPercent: 95 },
};

function view(pool: string, overrides: Partial<PoolView> = {}): PoolView {
  return {
    pool,
    readAt: Date.now(),
    status: {
      healthy: true,
      transactionId: 3n,
      metadataUsedBlocks: 10,
      metadataTotalBlocks: 100,
      dataUsedBlocks: 85,
      dataTotalBlocks: 100,
      mode: "rw",
      discardPassdown: true,
      noSpaceMode: "error_if_no_space",
      needsCheck: false,
    },
    usage: {
      dataBytes: 6_553_600,
      dataUsedBytes: 5_570_560,
      metadataBytes: 409_600,
      metadataUsedBytes: 40_960,
      provisionedBytes: 20_000_000,
      availableBytes: 45_536_000,
    },
    error: undefined,
    pressure: { data: { level: "warning", usedPercent: 85 }, metadata: { level: "normal", usedPercent: 10 } },
    ...overrides,
  };
}

async function scrape(metrics: DriverMetrics) {
  return parseExposition((await metrics.exposition()).body);
}

describe("DriverMetrics", () => {
  it("exports no pool series before the engine has started", async () => {
    const samples = await scrape(new DriverMetrics({ node: "n1" }));
    assert.equal(
      samples.filter((s) => s.name.startsWith("thinpool_csi_pool_") || s.name === "thinpool_csi_thin_devices")
        .length,
      0,
    );
  });

  it("fills the pool gauges from the pools' view at each scrape", async () => {
    const metrics = new DriverMetrics({ node: "n1" });
    let views = [view("fast"), view("slow", { status: undefined, usage: undefined, error: "gone" })];
    let scrapes = 0;
    metrics.attachPools({
      pools: async () => {
        scrapes++;
        return views;
      },
      deviceCounts: (pool) =>
        new Map(
          pool === "fast"
            ? [
                ["active", 2],
                ["resizing", 1],
              ]
            : [],
        ),
      spareThinIds: (pool) => (pool === "fast" ? 8 : 0),
      overProvisioningRatio: 10,
      thresholds: THRESHOLDS,
    });
    const samples = await scrape(metrics);
    const fast = { pool: "fast", node: "n1" };
    assert.equal(sampleValue(samples, "thinpool_csi_pool_data_bytes", fast), 6_553_600);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_data_used_bytes", fast), 5_570_560);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_metadata_bytes", fast), 409_600);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_metadata_used_bytes", fast), 40_960);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_provisioned_bytes", fast), 20_000_000);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_provisionable_bytes", fast), 45_536_000);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_over_provisioning_ratio", fast), 10);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_spare_thin_ids", fast), 8);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_up", fast), 1);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_needs_check", fast), 0);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_mode", { ...fast, mode: "rw" }), 1);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_mode", { ...fast, mode: "ro" }), 0);
    assert.equal(sampleValue(samples, "thinpool_csi_pool_pressure_level", { ...fast, resource: "data" }), 1);
    assert.equal(
      sampleValue(samples, "thinpool_csi_pool_pressure_level", { ...fast, resource: "metadata" }),
      0,
    );
    assert.equal(
      sampleValue(samples, "thinpool_csi_pool_pressure_threshold_ratio", {
        resource: "metadata",
        level: "warning",
      }),
      0.75,
    );
    assert.equal(sampleValue(samples, "thinpool_csi_thin_devices", { ...fast, state: "active" }), 2);
    assert.equal(sampleValue(samples, "thinpool_csi_thin_devices", { ...fast, state: "inactive" }), 0);
    assert.equal(sampleValue(samples, "thinpool_csi_thin_devices", { ...fast, state: "faulty" }), 0);
    assert.equal(sampleValue(samples, "thinpool_csi_thin_devices", { ...fast, state: "resizing" }), 1);
    assert.equal(
      sampleValue(samples, "thinpool_csi_pool_up", { pool: "slow" }),
      0,
      "an unreadable pool is down",
    );
    assert.equal(sampleValue(samples, "thinpool_csi_pool_data_bytes", { pool: "slow" }), undefined);
    assert.ok(scrapes > 0);

    views = [view("fast", { status: { ...view("fast").status!, healthy: false } })];
    const failed = await scrape(metrics);
    assert.equal(sampleValue(failed, "thinpool_csi_pool_mode", { pool: "fast", mode: "failed" }), 1);
    assert.equal(sampleValue(failed, "thinpool_csi_pool_mode", { pool: "fast", mode: "rw" }), 0);
    assert.equal(
      sampleValue(failed, "thinpool_csi_pool_up", { pool: "slow" }),
      undefined,
      "gone pools vanish",
    );
  });

  it("records suspends per pool and the reconciliation report", async () => {
    const metrics = new DriverMetrics({ node: "n1" });
    metrics.engineObserver.onSuspend?.({ device: "v1", pool: "fast", frozenMs: 12 });
    metrics.engineObserver.onSuspend?.({ device: "v2", pool: "fast", frozenMs: 3 });
    metrics.engineObserver.onReconcile?.({
      checked: 7,
      reactivated: 2,
      resumed: 1,
      rolledForward: 1,
      rolledBack: 0,
      deactivated: 0,
      quarantined: 3,
      faulty: 1,
      durationMs: 250,
      phasesMs: { listing: 40, settling: 60, reactivation: 120, metadataCheck: 30 },
    });
    const samples = await scrape(metrics);
    assert.equal(sampleValue(samples, "thinpool_csi_origin_suspend_seconds_count", { pool: "fast" }), 2);
    assert.equal(sampleValue(samples, "thinpool_csi_origin_suspend_seconds_sum", { pool: "fast" }), 0.015);
    assert.equal(
      sampleValue(samples, "thinpool_csi_origin_suspend_seconds_bucket", { pool: "fast", le: "0.005" }),
      1,
    );
    assert.equal(sampleValue(samples, "thinpool_csi_reconcile_devices", { result: "checked" }), 7);
    assert.equal(sampleValue(samples, "thinpool_csi_reconcile_devices", { result: "quarantined" }), 3);
    assert.equal(
      sampleValue(samples, "thinpool_csi_reconcile_phase_seconds", { phase: "reactivation" }),
      0.12,
    );
    assert.equal(
      sampleValue(samples, "thinpool_csi_reconcile_phase_seconds", { phase: "metadataCheck" }),
      0.03,
    );
    assert.equal(sampleValue(samples, "thinpool_csi_reconcile_devices", { result: "faulty" }), 1);
    assert.equal(sampleValue(samples, "thinpool_csi_reconcile_duration_seconds"), 0.25);
    assert.ok((sampleValue(samples, "thinpool_csi_reconcile_timestamp_seconds") ?? 0) > 1.7e9);
  });

  it("lists every metric it defines in the README's Monitoring table, and no other", () => {
    const readme = readFileSync(repoPath("README.md"), "utf8");
    const documented = new Set(
      [...readme.matchAll(/^\| `(thinpool_csi_[a-z_]+)(?:\{[a-z,]*\})?`/gm)].map((m) => m[1] as string),
    );
    const defined = new Set(
      new DriverMetrics({ node: "n" }).registry
        .getMetricsAsArray()
        .map((metric) => metric.name)
        .filter((name) => !/^thinpool_csi_(process|nodejs)_/.test(name)),
    );
    assert.deepEqual([...documented].sort(), [...defined].sort());
  });

  it("keeps two drivers' registries apart", async () => {
    const a = new DriverMetrics({ node: "a" });
    const b = new DriverMetrics({ node: "b" });
    a.rpcObserver.onRpcFinished({ method: "Probe", code: "OK", durationSeconds: 0.001 });
    assert.equal(sampleValue(await scrape(a), "thinpool_csi_rpc_requests_total", { method: "Probe" }), 1);
    assert.equal(
      sampleValue(await scrape(b), "thinpool_csi_rpc_requests_total", { method: "Probe" }),
      undefined,
    );
  });
});
