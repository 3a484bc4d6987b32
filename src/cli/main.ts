#!/usr/bin/env node
/**
 * thinpool-csi: `serve` runs the CSI server; `status` asks the running server for this node's status.
 */

import { ConfigError, parseServeArgs, serveUsage } from "../server/config.js";
import { isEntryPoint } from "../util/entry-point.js";
import { errorMessage } from "../util/errors.js";
import { runStatus } from "./status.js";
import { readPackageVersion } from "../util/package-info.js";

/** Exit code for bad usage or configuration, as sysexits' EX_USAGE. */
export const EXIT_USAGE = 64;

const USAGE = `Usage: thinpool-csi <command> [flags]

Commands:
  serve     run the CSI server (Identity, Controller, Node) on a unix socket
  status    this node's pools, volumes, snapshots and faulty devices (asks the running driver)

thinpool-csi serve --help lists the flags.`;

export interface CliIo {
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
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
      // Loaded here, not at the top: `status` (run often, with kubectl exec) then starts without loading gRPC,
      // SQLite and the engine.
      const { startDriver } = await import("../server/driver.js");
      const { thinpoolDriverFactories } = await import("../server/engine-wiring.js");
      await startDriver(parsed.config, thinpoolDriverFactories);
      return "serving";
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

if (isEntryPoint(import.meta.url)) {
  const io: CliIo = {
    env: process.env,
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
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
      if (error instanceof Error && error.name !== "SocketInUseError" && error.stack !== undefined) {
        process.stderr.write(`${error.stack}\n`);
      }
      process.exitCode = 1;
    },
  );
}
