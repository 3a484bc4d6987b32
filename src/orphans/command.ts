/** `thinpool-csi orphans [--delete] [-o json]`: the orphan report (report.ts) for the operator. */
import { flagsUsage, parseCommandFlags, type FlagSpec } from "../cli/flags.js";
import { CsiClient } from "../csi/client.js";
import { loadKubeConfig, makeKubeClients } from "../kube/index.js";
import { ConfigError } from "../server/config.js";
import { parseUnixEndpoint } from "../server/endpoint.js";
import { parseDuration } from "../util/duration.js";
import { errorMessage } from "../util/errors.js";
import { deleteOrphans, findOrphans } from "./report.js";

export const ORPHANS_FLAGS = {
  endpoint: { env: "CSI_ENDPOINT", default: "unix:///csi/csi.sock", help: "the running driver's socket" },
  kubeconfig: {
    help: "kubeconfig file; default: the pod's service account, else KUBECONFIG, else ~/.kube/config",
  },
  "driver-name": {
    env: "DRIVER_NAME",
    default: "thinpool.csi.dev",
    help: "driver whose PVs and contents count",
  },
  "grace-period": {
    default: "1h",
    help: "devices younger than this are never reported (a create may be in progress)",
  },
  delete: { boolean: true, help: "delete the orphans found, through the driver's socket" },
  output: { default: "text", help: "text or json (also -o)" },
} as const satisfies Record<string, FlagSpec>;

export interface OrphansIo {
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: (text: string) => void;
}

/** Returns the exit code: 0 when nothing failed (orphans found or not), 1 when a delete failed. */
export async function runOrphans(argv: readonly string[], io: OrphansIo): Promise<number> {
  // `-o json` / `-o=json`, as kubectl writes it.
  const args = argv.flatMap((a) =>
    a === "-o" ? ["--output"] : a.startsWith("-o=") ? [`--output=${a.slice(3)}`] : [a],
  );
  const flags = parseCommandFlags("orphans", args, ORPHANS_FLAGS, io.env);
  if (flags.help) {
    io.stdout(
      `${flagsUsage("orphans", "Thin devices of this node that no PV or VolumeSnapshotContent refers to.", ORPHANS_FLAGS)}\n`,
    );
    return 0;
  }
  const problems: string[] = [];
  let graceMs = 0;
  let socketPath = "";
  try {
    graceMs = parseDuration(flags["grace-period"]);
  } catch (error) {
    problems.push(`--grace-period: ${errorMessage(error)}`);
  }
  try {
    socketPath = parseUnixEndpoint(flags.endpoint);
  } catch (error) {
    problems.push(`--endpoint: ${errorMessage(error)}`);
  }
  if (flags.output !== "text" && flags.output !== "json") problems.push("-o/--output: text or json");
  if (problems.length > 0) throw new ConfigError(problems);

  const kube = makeKubeClients(loadKubeConfig({ kubeconfigPath: flags.kubeconfig, env: io.env }).config);
  const csi = new CsiClient(socketPath);
  try {
    const report = await findOrphans({ csi, kube, driverName: flags["driver-name"], graceMs });
    const deleted = flags.delete === "true" ? await deleteOrphans(csi, report.orphans) : undefined;
    if (flags.output === "json") {
      io.stdout(`${JSON.stringify({ ...report, ...(deleted ? { deleted } : {}) }, null, 2)}\n`);
    } else {
      const lines = report.orphans.map(
        (o) => `${o.kind.padEnd(8)} ${o.id}  ${o.sizeBytes} bytes  age ${o.ageSeconds ?? "?"}s`,
      );
      lines.push(
        `${report.orphans.length} orphan(s) of ${report.scanned} device(s); ${report.tooYoung} unreferenced but younger than ${flags["grace-period"]} (not reported: they may be being created)`,
      );
      for (const d of deleted ?? [])
        lines.push(d.error ? `delete ${d.id}: FAILED: ${d.error}` : `deleted ${d.id}`);
      if (deleted === undefined && report.orphans.length > 0)
        lines.push("nothing deleted: run again with --delete to delete them");
      io.stdout(`${lines.join("\n")}\n`);
    }
    return deleted?.some((d) => d.error !== undefined) ? 1 : 0;
  } finally {
    csi.close();
  }
}
