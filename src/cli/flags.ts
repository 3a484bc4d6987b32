/**
 * Flags of the small Kubernetes-facing commands (`placement-controller`, `orphans`): each flag may fall
 * back to an environment variable, then to a default; `--help` prints the table. Problems are collected
 * into one ConfigError, as `serve` does.
 */
import { parseArgs } from "node:util";

import { ConfigError } from "../server/config.js";
import { errorMessage } from "../util/errors.js";

export interface FlagSpec {
  readonly env?: string;
  /** Undefined: the flag is optional and has no value unless given. */
  readonly default?: string;
  /** A switch (`--delete`), not a `--name value` flag. */
  readonly boolean?: true;
  readonly help: string;
}

/** A flag with a default always has a value; switches are "true" or undefined. */
export type FlagValues<S extends Record<string, FlagSpec>> = {
  readonly [P in keyof S]: S[P] extends { default: string } ? string : string | undefined;
} & { readonly help: boolean };

export function parseCommandFlags<S extends Record<string, FlagSpec>>(
  command: string,
  argv: readonly string[],
  specs: S,
  env: NodeJS.ProcessEnv,
): FlagValues<S> {
  const entries = Object.entries(specs);
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        ...Object.fromEntries(
          entries.map(([flag, spec]) => [flag, { type: spec.boolean ? "boolean" : "string" } as const]),
        ),
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new ConfigError([
      `${errorMessage(error).split("\n")[0] ?? ""} (see thinpool-csi ${command} --help)`,
    ]);
  }
  const result: Record<string, string | boolean | undefined> = { help: values["help"] === true };
  for (const [flag, spec] of entries) {
    const given = values[flag];
    const fromEnv = spec.env !== undefined && env[spec.env] !== "" ? env[spec.env] : undefined;
    result[flag] = spec.boolean
      ? given === true
        ? "true"
        : undefined
      : ((given as string | undefined) ?? fromEnv ?? spec.default);
  }
  return result as FlagValues<S>;
}

export function flagsUsage(
  command: string,
  summary: string,
  specs: Readonly<Record<string, FlagSpec>>,
): string {
  const lines = Object.entries(specs).map(([flag, spec]) => {
    const extra = [
      spec.env ? `env ${spec.env}` : "",
      spec.default !== undefined ? `default ${spec.default || '""'}` : "",
    ]
      .filter((s) => s !== "")
      .join(", ");
    return `  --${flag}${spec.boolean ? "" : " <value>"}\n      ${spec.help}${extra ? ` (${extra})` : ""}`;
  });
  return `Usage: thinpool-csi ${command} [flags]\n\n${summary}\n\nFlags:\n${lines.join("\n")}`;
}
