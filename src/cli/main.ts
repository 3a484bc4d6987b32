#!/usr/bin/env node
/**
 * thinpool-csi: `serve` runs the CSI server; `placement-controller` steers restores and clones to their
 * source's node; `status` (to come with the state store) reports on it.
 */
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { KubeConfigError } from "../kube/index.js";
import { runOrphans } from "../orphans/command.js";
import { parsePlacementArgs, placementUsage, runPlacementController } from "../placement/command.js";
import { ConfigError, parseServeArgs, serveUsage } from "../server/config.js";
import { startDriver, type DriverFactories } from "../server/driver.js";
import { thinpoolDriverFactories, type EngineHost } from "../server/engine-wiring.js";
import { SocketInUseError } from "../server/server.js";
import { errorMessage } from "../util/errors.js";
import { readPackageVersion } from "../util/package-info.js";

/** Exit code for bad usage or configuration, as sysexits' EX_USAGE. */
export const EXIT_USAGE = 64;

const USAGE = `Usage: thinpool-csi <command> [flags]

Commands:
  serve                 run the CSI server (Identity, Controller, Node) on a unix socket
  placement-controller  place restores and clones on their source's node (one per cluster)
  orphans               list (--delete: delete) thin devices no PV or VolumeSnapshotContent refers to
  status                report this node's pools and volumes (not available yet)

thinpool-csi <command> --help lists the flags.`;

export interface CliIo {
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Aborted on SIGTERM/SIGINT for the long-running commands other than `serve` (which has its own). */
  readonly shutdown?: AbortSignal;
}

/** The thin-pool engine and the Controller/Node services (src/server/engine-wiring.ts). */
export const driverFactories: DriverFactories<EngineHost> = thinpoolDriverFactories;

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
        if (error instanceof ConfigError) {
          io.stderr(
            `thinpool-csi serve: invalid configuration:\n${error.problems.map((p) => `  - ${p}`).join("\n")}\n`,
          );
          return EXIT_USAGE;
        }
        throw error;
      }
      if (parsed.help || parsed.config === undefined) {
        io.stdout(`${serveUsage()}\n`);
        return 0;
      }
      await startDriver(parsed.config, driverFactories);
      return "serving";
    }
    case "placement-controller": {
      let settings;
      try {
        settings = parsePlacementArgs(rest, io.env);
      } catch (error) {
        if (error instanceof ConfigError) return usageError(io, command, error);
        throw error;
      }
      if (settings === undefined) {
        io.stdout(`${placementUsage()}\n`);
        return 0;
      }
      await runPlacementController(settings, io.env, io.shutdown ?? new AbortController().signal);
      return 0;
    }
    case "orphans":
      try {
        return await runOrphans(rest, io);
      } catch (error) {
        if (error instanceof ConfigError) return usageError(io, command, error);
        throw error;
      }
    case "status":
      io.stderr("thinpool-csi status: not available yet (it needs the state store)\n");
      return 1;
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

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) {
    return false;
  }
  try {
    // npm's bin link is a symlink to this file.
    return realpathSync(script) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
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
      const expected = error instanceof SocketInUseError || error instanceof KubeConfigError;
      if (!expected && error instanceof Error && error.stack !== undefined) {
        process.stderr.write(`${error.stack}\n`);
      }
      process.exitCode = 1;
    },
  );
}
