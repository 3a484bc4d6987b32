#!/usr/bin/env node
/**
 * thinpool-csi: `serve` runs the CSI server; `status` (to come with the state store) reports on it.
 */
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { errorMessage } from "../util/errors.js";
import { readPackageVersion } from "../util/package-info.js";

/** Exit code for bad usage or configuration, as sysexits' EX_USAGE. */
export const EXIT_USAGE = 64;

const USAGE = `Usage: thinpool-csi <command> [flags]

Commands:
  serve     run the CSI server (Identity, Controller, Node) on a unix socket
  status    report this node's pools and volumes (not available yet)

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
      // Loaded here, not at the top: gRPC, SQLite and the engine cost seconds of start-up in a slow VM,
      // and `--version` or `--help` need none of them.
      const { ConfigError, parseServeArgs, serveUsage } = await import("../server/config.js");
      const { startDriver } = await import("../server/driver.js");
      const { thinpoolDriverFactories } = await import("../server/engine-wiring.js");
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
      await startDriver(parsed.config, thinpoolDriverFactories);
      return "serving";
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

/** SocketInUseError, recognised by name so that this module does not load the server for it. */
function isSocketInUse(error: unknown): boolean {
  return error instanceof Error && error.name === "SocketInUseError";
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
      if (!isSocketInUse(error) && error instanceof Error && error.stack !== undefined) {
        process.stderr.write(`${error.stack}\n`);
      }
      process.exitCode = 1;
    },
  );
}
