/** Durations in flags: `60s`, `2m`, `1m30s`, `500ms`, `1h`, or a plain number of seconds. */

export class DurationParseError extends Error {
  override readonly name = "DurationParseError";
}

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;

/** Returns milliseconds; throws {@link DurationParseError}. */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (/^\d+(?:\.\d+)?$/.test(trimmed)) {
    return Math.round(Number(trimmed) * 1000);
  }
  if (trimmed === "") {
    throw new DurationParseError(`'${text}' is not a duration: use e.g. 60s, 2m, 1m30s or 500ms`);
  }
  let total = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < trimmed.length) {
    const match = PART.exec(trimmed);
    if (match === null) {
      throw new DurationParseError(`'${text}' is not a duration: use e.g. 60s, 2m, 1m30s or 500ms`);
    }
    total += Number(match[1]) * (UNIT_MS[match[2] as string] as number);
  }
  return Math.round(total);
}
