import assert from "node:assert/strict";

import type { PoolPressureConfig } from "../../../src/server/config.js";
import {
  PoolMonitor,
  pressureLevel,
  pressureNotice,
  type PoolReader,
  type PressureChange,
} from "../../../src/server/pool-monitor.js";
import { computeUsage, DEFAULT_CAPACITY_POLICY } from "../../../src/thinpool/capacity.js";
import type { PoolStatus } from "../../../src/thinpool/status.js";

const THRESHOLDS: PoolPressureConfig = {
  data: { warningPercent: 80, criticalPercent: 90 },
  metadata: { warningPercent: 70, criticalPercent: 95 },
};

/** A pool of 1000 data blocks and 1000 metadata blocks whose use the test sets. */
class FakePools implements PoolReader {
  readonly poolNames = ["p"];
  dataUsed = 0;
  metadataUsed = 0;
  healthy = true;
  unreadable: Error | undefined;
  reads = 0;

  async poolStatus(): Promise<PoolStatus> {
    this.reads++;
    if (this.unreadable) throw this.unreadable;
    return {
      healthy: this.healthy,
      transactionId: 0n,
      metadataUsedBlocks: this.metadataUsed,
      metadataTotalBlocks: this.healthy ? 1000 : 0,
      dataUsedBlocks: this.dataUsed,
      dataTotalBlocks: this.healthy ? 1000 : 0,
      mode: "rw",
      discardPassdown: false,
      noSpaceMode: "error_if_no_space",
      needsCheck: false,
    };
  }

  async poolUsage() {
    return computeUsage(await this.poolStatus(), 65536, 0, DEFAULT_CAPACITY_POLICY);
  }
}

describe("pool pressure", () => {
  it("levels: warning and critical from their thresholds, left downwards only 1 point below them", () => {
    const t = THRESHOLDS.data;
    assert.equal(pressureLevel(79.9, t, "normal"), "normal");
    assert.equal(pressureLevel(80, t, "normal"), "warning");
    assert.equal(pressureLevel(95, t, "normal"), "critical");
    assert.equal(pressureLevel(89.5, t, "critical"), "critical", "within the hysteresis");
    assert.equal(pressureLevel(89, t, "critical"), "warning");
    assert.equal(pressureLevel(79.5, t, "warning"), "warning");
    assert.equal(pressureLevel(79, t, "warning"), "normal");
    assert.equal(
      pressureLevel(79.5, t, "critical"),
      "warning",
      "from critical, 79.5% is still within the warning level's hysteresis",
    );
    assert.equal(pressureLevel(10, t, "critical"), "normal");
  });

  it("reports a change once when a threshold is crossed, up and back down, per resource", async () => {
    const pools = new FakePools();
    const changes: PressureChange[] = [];
    const monitor = new PoolMonitor(pools, THRESHOLDS, (change) => changes.push(change));
    const step = async (dataUsed: number, metadataUsed = 0) => {
      pools.dataUsed = dataUsed;
      pools.metadataUsed = metadataUsed;
      await monitor.refresh();
      return changes.splice(0).map((c) => `${c.resource} ${c.from}->${c.to} ${c.usedPercent}`);
    };
    assert.deepEqual(await step(500), []);
    assert.deepEqual(await step(850), ["data normal->warning 85"]);
    assert.deepEqual(await step(860), [], "no repeat while the level stays");
    assert.deepEqual(await step(950, 960), ["data warning->critical 95", "metadata normal->critical 96"]);
    assert.deepEqual(await step(895, 960), [], "89.5% stays critical (hysteresis)");
    assert.deepEqual(await step(700, 100), ["data critical->normal 70", "metadata critical->normal 10"]);
  });

  it("keeps the level while the pool cannot be read or has failed, and shows why", async () => {
    const pools = new FakePools();
    const changes: PressureChange[] = [];
    const monitor = new PoolMonitor(pools, THRESHOLDS, (change) => changes.push(change));
    pools.dataUsed = 950;
    await monitor.refresh();
    pools.unreadable = new Error("Device tpcsi-pool not found");
    const [unreadable] = await monitor.refresh();
    assert.equal(unreadable?.error, "Device tpcsi-pool not found");
    assert.equal(unreadable?.pressure.data.level, "critical");
    assert.equal(unreadable?.pressure.data.usedPercent, undefined);
    pools.unreadable = undefined;
    pools.healthy = false;
    const [failed] = await monitor.refresh();
    assert.equal(failed?.pressure.data.level, "critical");
    assert.equal(changes.length, 1, "only the first crossing");
  });

  it("serves the latest view while it is fresh and shares one read between concurrent callers", async () => {
    const pools = new FakePools();
    const monitor = new PoolMonitor(pools, THRESHOLDS, () => undefined);
    await Promise.all([monitor.current(60_000), monitor.current(60_000), monitor.refresh()]);
    const readsAfterFirst = pools.reads;
    assert.equal(readsAfterFirst, 2, "one status + one usage read for the three callers");
    await monitor.current(60_000);
    assert.equal(pools.reads, readsAfterFirst, "fresh: not read again");
    await monitor.current(-1);
    assert.equal(pools.reads, readsAfterFirst + 2, "stale: read again");
  });

  it("tells operators what crossed, how far, and what to do; recovery is a Normal event", () => {
    const base = { pool: "fast", thresholds: THRESHOLDS.data, usedPercent: 91.26 };
    assert.deepEqual(pressureNotice({ ...base, resource: "data", from: "warning", to: "critical" }), {
      type: "Warning",
      reason: "ThinPoolDataCritical",
      message:
        "thin pool fast: data use 91.3% has reached the critical level of 90%; free space (delete volumes or snapshots) or grow the pool's data device before it fills up",
    });
    const metadata = pressureNotice({ ...base, resource: "metadata", from: "normal", to: "warning" });
    assert.equal(metadata.reason, "ThinPoolMetadataWarning");
    assert.match(metadata.message, /grow the pool's metadata device/);
    const down = pressureNotice({
      ...base,
      usedPercent: 85,
      resource: "data",
      from: "critical",
      to: "warning",
    });
    assert.equal(down.type, "Warning");
    assert.match(down.message, /fell to 85.0%, below the critical level of 90%/);
    const recovered = pressureNotice({
      ...base,
      usedPercent: 50,
      resource: "data",
      from: "warning",
      to: "normal",
    });
    assert.equal(recovered.type, "Normal");
    assert.equal(recovered.reason, "ThinPoolDataNormal");
    assert.match(recovered.message, /back to 50.0%, below the warning level of 80%/);
  });
});
