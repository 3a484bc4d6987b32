#!/usr/bin/env node
/**
 * thinpool-csi: `serve` runs the CSI server; `status` asks the running server for this node's status;
 * `placement-controller` steers restores and clones to their source's node; `orphans` reports (and on
 * request deletes) thin devices nothing in the cluster refers to.
 *
 * Every command's own modules are loaded when it runs, not at the top: `status` and `--version` (run
 * often, with kubectl exec) then start without loading gRPC, SQLite, the engine or the Kubernetes client.
 */
import { ConfigError, parseServeArgs, serveUsage } from "../server/config.js";
import { isEntryPoint } from "../util/entry-point.js";
import { errorMessage } from "../util/errors.js";
import { readPackageVersion } from "../util/package-info.js";
import { runStatus } from "./status.js";

/** Exit code for bad usage or configuration, as sysexits' EX_USAGE. */
export const EXIT_USAGE = 64;

const USAGE = `Usage: thinpool-csi <command> [flags]

Commands:
  serve                 run the CSI server (Identity, Controller, Node) on a unix socket
  status                this node's pools, volumes, snapshots and faulty devices (asks the running driver)
  placement-controller  place restores and clones on their source's node (one per cluster)
  orphans               list (--delete: delete) thin devices no PV or VolumeSnapshotContent refers to

thinpool-csi <command> --help lists the flags.`;

/** Errors that are expected refusals: their message is enough, no stack trace. */
const EXPECTED_ERRORS = new Set(["SocketInUseError", "KubeConfigError"]);

export interface CliIo {
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Aborted on SIGTERM/SIGINT for the long-running commands other than `serve` (which has its own). */
  readonly shutdown?: AbortSignal;
}

/**
 * Runs a command. Returns the exit code, or "serving" when the server was started (the process then
 * lives until a signal shuts it down).
 */
export async function main(argv: readonly string[], io: CliIo): Promise<number | "serving"> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve": {
      let parsed;
      try {
        parsed = parseServeArgs(rest, { env: io.env });
      } catch (error) {
        if (error instanceof ConfigError) return usageError(io, command, error);
        throw error;
      }
      if (parsed.help || parsed.config === undefined) {
        io.stdout(`${serveUsage()}\n`);
        return 0;
      }
      const { startDriver } = await import("../server/driver.js");
      const { thinpoolDriverFactories } = await import("../server/engine-wiring.js");
      await startDriver(parsed.config, thinpoolDriverFactories);
      return "serving";
    }
    case "placement-controller": {
      const placement = await import("../placement/command.js");
      let settings;
      try {
        settings = placement.parsePlacementArgs(rest, io.env);
      } catch (error) {
        if (error instanceof ConfigError) return usageError(io, command, error);
        throw error;
      }
      if (settings === undefined) {
        io.stdout(`${placement.placementUsage()}\n`);
        return 0;
      }
      await placement.runPlacementController(settings, io.env, io.shutdown ?? new AbortController().signal);
      return 0;
    }
    case "orphans": {
      const { runOrphans } = await import("../orphans/command.js");
      try {
        return await runOrphans(rest, io);
      } catch (error) {
        if (error instanceof ConfigError) return usageError(io, command, error);
        throw error;
      }
    }
    case "status":
      return runStatus(rest, io);
    case "--version":
    case "version":
      io.stdout(`${readPackageVersion()}\n`);
      return 0;
    case undefined:
    case "-h":
    case "--help":
    case "help":
      io.stdout(`${USAGE}\n`);
      return command === undefined ? EXIT_USAGE : 0;
    default:
      io.stderr(`thinpool-csi: unknown command '${command}'\n\n${USAGE}\n`);
      return EXIT_USAGE;
  }
}

function usageError(io: CliIo, command: string, error: ConfigError): number {
  io.stderr(
    `thinpool-csi ${command}: invalid configuration:\n${error.problems.map((p) => `  - ${p}`).join("\n")}\n`,
  );
  return EXIT_USAGE;
}

/** Aborts on the first SIGTERM or SIGINT (graceful stop); a second one kills as usual. */
function shutdownSignal(): AbortSignal {
  const controller = new AbortController();
  const stop = (): void => controller.abort();
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  return controller.signal;
}

if (isEntryPoint(import.meta.url)) {
  const io: CliIo = {
    env: process.env,
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    ...(process.argv[2] === "placement-controller" ? { shutdown: shutdownSignal() } : {}),
  };
  main(process.argv.slice(2), io).then(
    (result) => {
      if (result !== "serving") {
        process.exitCode = result;
      }
    },
    (error: unknown) => {
      process.stderr.write(`thinpool-csi: ${errorMessage(error)}\n`);
      // An expected refusal needs no stack; anything else does, to be fixed.
      if (error instanceof Error && !EXPECTED_ERRORS.has(error.name) && error.stack !== undefined) {
        process.stderr.write(`${error.stack}\n`);
      }
      process.exitCode = 1;
    },
  );
}
