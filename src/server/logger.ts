import { pino, stdTimeFunctions, type DestinationStream, type Logger, type LevelWithSilent } from "pino";

export type { Logger };

export const LOG_LEVELS: readonly LevelWithSilent[] = [
  "fatal",
  "error",
  "warn",
  "info",
  "debug",
  "trace",
  "silent",
];

export interface LoggerOptions {
  level: LevelWithSilent;
  /** Fields on every line, e.g. { node: "n1" }. */
  base?: Record<string, string>;
  /** Where lines go; stdout by default. Tests pass a stream that collects them. */
  destination?: DestinationStream;
}

/**
 * JSON lines for the cluster's log pipeline: ISO time, `level` as a name (not pino's number, which log
 * queries would have to translate), and the driver's name on every line.
 */
export function createLogger(options: LoggerOptions): Logger {
  const pinoOptions = {
    level: options.level,
    base: { name: "thinpool-csi", pid: process.pid, ...options.base },
    timestamp: stdTimeFunctions.isoTime,
    formatters: {
      level: (label: string) => ({ level: label }),
    },
  };
  return options.destination === undefined ? pino(pinoOptions) : pino(pinoOptions, options.destination);
}
