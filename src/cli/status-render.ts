/**
 * Human-readable rendering of node status reports (src/server/node-status.ts), for `thinpool-csi status`
 * (one node) and `kubectl thinpool` (every node, with a NODE column).
 */
import {
  ownerOf,
  type NodeStatusReport,
  type PoolReport,
  type ResourcePressureReport,
} from "../server/node-status.js";
import { fmt } from "../thinpool/capacity.js";
import { RECONCILE_RESULTS, type ReconcilePhases } from "../thinpool/context.js";

/** Left-aligned columns separated by two spaces; no trailing blanks. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  return [header, ...rows]
    .map((row) =>
      row
        .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

const size = (bytes: number | null): string => (bytes === null ? "-" : fmt(bytes));

function usedOf(used: number | null, total: number | null): string {
  if (used === null || total === null) return "-";
  const percent = total > 0 ? ` (${((used / total) * 100).toFixed(1)}%)` : "";
  return `${fmt(used)}/${fmt(total)}${percent}`;
}

function pressureText(name: string, pressure: ResourcePressureReport): string {
  const mark = pressure.level === "normal" ? "ok" : pressure.level.toUpperCase();
  return `${name} ${mark} (warn ${pressure.warningPercent}%, crit ${pressure.criticalPercent}%)`;
}

function poolRow(pool: PoolReport): string[] {
  const ratio =
    pool.provisionedBytes !== null && pool.dataBytes
      ? ` (${(pool.provisionedBytes / pool.dataBytes).toFixed(2)}x of ${pool.overProvisioningRatio}x)`
      : "";
  return [
    pool.name,
    pool.mode + (pool.needsCheck ? ",needs_check" : ""),
    usedOf(pool.dataUsedBytes, pool.dataBytes),
    usedOf(pool.metadataUsedBytes, pool.metadataBytes),
    `${size(pool.provisionedBytes)}${ratio}`,
    size(pool.provisionableBytes),
    pool.spareThinIds === undefined ? "-" : String(pool.spareThinIds),
    `${pressureText("data", pool.pressure.data)}, ${pressureText("metadata", pool.pressure.metadata)}`,
  ];
}

export interface RenderOptions {
  /** Prefix every row with the node's name (for several nodes). */
  readonly nodeColumn: boolean;
}

/** The status of one or more nodes as text tables. */
export function renderStatus(reports: readonly NodeStatusReport[], options: RenderOptions): string {
  const withNode = (report: NodeStatusReport, row: string[]): string[] =>
    options.nodeColumn ? [report.node, ...row] : row;
  const nodeHeader = options.nodeColumn ? ["NODE"] : [];
  const out: string[] = [];

  for (const report of reports) {
    const ready = report.ready ? "ready" : `NOT READY: ${report.notReadyReason ?? "unknown reason"}`;
    out.push(`Node ${report.node}: ${report.driver} ${report.version}, ${ready}`);
    const reconcile = report.lastReconcile;
    out.push(
      reconcile === null
        ? "  start-up reconciliation: not finished"
        : `  start-up reconciliation: ${RECONCILE_RESULTS.map((r) => `${r} ${reconcile[r]}`).join(", ")} (${reconcile.durationMs} ms${describePhases(reconcile.phasesMs)})`,
    );
    for (const pool of report.pools) {
      if (pool.error !== null) out.push(`  pool ${pool.name} cannot be read: ${pool.error}`);
      if (pool.blockedBy !== null) out.push(`  pool ${pool.name} refuses new volumes: ${pool.blockedBy}`);
    }
  }

  out.push(
    "",
    formatTable(
      [
        ...nodeHeader,
        "POOL",
        "MODE",
        "DATA USED",
        "METADATA USED",
        "PROVISIONED",
        "PROVISIONABLE",
        "SPARE IDS",
        "PRESSURE",
      ],
      reports.flatMap((report) => report.pools.map((pool) => withNode(report, poolRow(pool)))),
    ),
  );

  const devices = reports.flatMap((report) => report.devices.map((device) => ({ report, device })));
  out.push("");
  if (devices.length === 0) {
    out.push("No volumes or snapshots.");
  } else {
    out.push(
      formatTable(
        [...nodeHeader, "NAME", "KIND", "POOL", "STATE", "SIZE", "USED", "BELONGS TO"],
        devices.map(({ report, device }) =>
          withNode(report, [
            device.name,
            device.kind,
            device.pool,
            device.state,
            fmt(device.sizeBytes),
            device.usedBytes === null ? "-" : fmt(device.usedBytes),
            ownerOf(device) ?? "-",
          ]),
        ),
      ),
    );
  }

  const faulty = reports.flatMap((report) => report.faulty.map((device) => ({ report, device })));
  if (faulty.length > 0) {
    out.push("", `FAULTY DEVICES (${faulty.length})`);
    for (const { report, device } of faulty) {
      const where = options.nodeColumn ? `node ${report.node}, ` : "";
      out.push(
        `${device.name} (${device.kind}, ${where}pool ${device.pool}, ${device.owner ?? "no owner recorded"})`,
        `  reason: ${device.reason}`,
        `  what to do: ${device.action}`,
      );
    }
  }
  const quarantined = reports.flatMap((report) => report.quarantinedIds.map((id) => ({ report, id })));
  if (quarantined.length > 0) {
    out.push("", `QUARANTINED THIN IDS (${quarantined.length}; never reused, never deleted by the driver)`);
    for (const { report, id } of quarantined) {
      const where = options.nodeColumn ? `node ${report.node}, ` : "";
      out.push(`${where}pool ${id.pool}, id ${id.deviceId}: ${id.reason} (since ${id.since})`);
    }
  }
  return `${out.join("\n")}\n`;
}

/** Nothing for a driver too old to report its phases. */
function describePhases(phases: ReconcilePhases | undefined): string {
  if (!phases) return "";
  return `: listing ${phases.listing}, settling ${phases.settling}, reactivation ${phases.reactivation}, metadata check ${phases.metadataCheck}`;
}
