/**
 * `thinpool-csi status [-o text|json] [--state-dir DIR]`: this node's pools, volumes, snapshots and faulty
 * devices, asked of the running driver over its admin socket (so it shows live state, including the last
 * reconciliation and the pressure levels, and never opens the SQLite store from a second process). Run it
 * in the driver container: `kubectl exec <driver pod> -c thinpool-csi -- thinpool-csi status`.
 */
import http from "node:http";
import { parseArgs } from "node:util";

import { adminSocketPath, type NodeStatusReport } from "../server/node-status.js";
import { errorMessage } from "../util/errors.js";
import { renderStatus } from "./status-render.js";

export const DEFAULT_STATE_DIR = "/var/lib/thinpool-csi";
/** How long to wait for the driver's answer. */
const STATUS_TIMEOUT_MS = 30_000;

export const STATUS_USAGE = `Usage: thinpool-csi status [-o text|json] [--state-dir DIR]

Asks the driver running on this node (its admin socket, <state-dir>/admin.sock) for its status.
  -o, --output      text (default) or json
  --state-dir       the driver's --state-dir [STATE_DIR] (default ${DEFAULT_STATE_DIR})`;

/** The driver could not be asked: not running, another state dir, or no permission. */
export class StatusUnavailableError extends Error {
  override readonly name = "StatusUnavailableError";
}

export interface StatusIo {
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

/** GET /status on the admin socket. */
export function fetchNodeStatus(socketPath: string): Promise<NodeStatusReport> {
  return new Promise((resolve, reject) => {
    const request = http.get({ socketPath, path: "/status", timeout: STATUS_TIMEOUT_MS }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => {
        if (response.statusCode !== 200) {
          reject(new StatusUnavailableError(`the driver answered ${response.statusCode}: ${body.trim()}`));
          return;
        }
        try {
          resolve(JSON.parse(body) as NodeStatusReport);
        } catch (error) {
          reject(new StatusUnavailableError(`the driver's answer is not JSON: ${errorMessage(error)}`));
        }
      });
    });
    request.on("timeout", () => request.destroy(new Error(`no answer within ${STATUS_TIMEOUT_MS / 1000}s`)));
    request.on("error", (error: NodeJS.ErrnoException) => {
      const why =
        error.code === "ENOENT"
          ? `no driver is serving ${socketPath} (is the driver running with this --state-dir?)`
          : error.code === "ECONNREFUSED"
            ? `${socketPath} is left from a driver that is not running any more`
            : error.code === "EACCES"
              ? `no permission to connect to ${socketPath} (run as root, in the driver container)`
              : `cannot ask the driver at ${socketPath}: ${errorMessage(error)}`;
      reject(new StatusUnavailableError(why));
    });
  });
}

/** Runs `status`; returns the exit code (2 when the driver cannot be asked, 64 on bad usage). */
export async function runStatus(argv: readonly string[], io: StatusIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        output: { type: "string", short: "o", default: "text" },
        "state-dir": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    io.stderr(`thinpool-csi status: ${errorMessage(error)}\n\n${STATUS_USAGE}\n`);
    return 64;
  }
  if (values.help === true) {
    io.stdout(`${STATUS_USAGE}\n`);
    return 0;
  }
  if (values.output !== "text" && values.output !== "json") {
    io.stderr(`thinpool-csi status: -o must be text or json, got '${values.output}'\n`);
    return 64;
  }
  const stateDir = values["state-dir"] ?? (io.env.STATE_DIR || DEFAULT_STATE_DIR);
  let report: NodeStatusReport;
  try {
    report = await fetchNodeStatus(adminSocketPath(stateDir));
  } catch (error) {
    io.stderr(`thinpool-csi status: ${errorMessage(error)}\n`);
    return 2;
  }
  io.stdout(
    values.output === "json"
      ? `${JSON.stringify(report, null, 2)}\n`
      : renderStatus([report], { nodeColumn: false }),
  );
  return 0;
}
