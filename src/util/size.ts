/**
 * Byte sizes written the way Kubernetes quantities are: `20Gi`, `256Mi`, `64Ki`, `1G`, `500M`, `1.5Gi`
 * or a plain number of bytes. Parsed with integer arithmetic (BigInt) so `1.1Gi` is exact and a value
 * that is not a whole number of bytes is refused instead of being rounded silently.
 */

const BINARY_SUFFIXES: Readonly<Record<string, bigint>> = {
  Ki: 1n << 10n,
  Mi: 1n << 20n,
  Gi: 1n << 30n,
  Ti: 1n << 40n,
  Pi: 1n << 50n,
  Ei: 1n << 60n,
};

const DECIMAL_SUFFIXES: Readonly<Record<string, bigint>> = {
  k: 10n ** 3n,
  M: 10n ** 6n,
  G: 10n ** 9n,
  T: 10n ** 12n,
  P: 10n ** 15n,
  E: 10n ** 18n,
};

export class SizeParseError extends Error {
  override readonly name = "SizeParseError";
}

const SIZE_PATTERN = /^(\d+)(?:\.(\d+))?([A-Za-z]*)$/;

/** Parses `text` into a number of bytes; throws {@link SizeParseError} with a reason a person can act on. */
export function parseSize(text: string): number {
  const trimmed = text.trim();
  const match = SIZE_PATTERN.exec(trimmed);
  if (match === null) {
    throw new SizeParseError(
      `'${text}' is not a size: use a whole or decimal number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E), e.g. 20Gi`,
    );
  }
  const [, wholeDigits = "", fractionDigits = "", suffix = ""] = match;
  let multiplier: bigint;
  if (suffix === "") {
    multiplier = 1n;
  } else if (suffix in BINARY_SUFFIXES) {
    multiplier = BINARY_SUFFIXES[suffix] as bigint;
  } else if (suffix in DECIMAL_SUFFIXES) {
    multiplier = DECIMAL_SUFFIXES[suffix] as bigint;
  } else {
    const hint = suffix === "K" ? " (did you mean Ki = 1024 or k = 1000?)" : "";
    throw new SizeParseError(
      `'${text}' has an unknown unit '${suffix}'${hint}: use Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024) or k, M, G, T, P, E (powers of 1000)`,
    );
  }
  const scale = 10n ** BigInt(fractionDigits.length);
  const scaled = BigInt(wholeDigits + fractionDigits) * multiplier;
  if (scaled % scale !== 0n) {
    throw new SizeParseError(`'${text}' is not a whole number of bytes`);
  }
  const bytes = scaled / scale;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new SizeParseError(`'${text}' is too large (more than ${Number.MAX_SAFE_INTEGER} bytes)`);
  }
  return Number(bytes);
}

/** Formats bytes with the largest binary unit that divides them exactly (65536 -> "64Ki"), for messages. */
export function formatSize(bytes: number): string {
  const units: Array<[string, number]> = [
    ["Ei", 2 ** 60],
    ["Pi", 2 ** 50],
    ["Ti", 2 ** 40],
    ["Gi", 2 ** 30],
    ["Mi", 2 ** 20],
    ["Ki", 2 ** 10],
  ];
  for (const [unit, factor] of units) {
    if (bytes >= factor && bytes % factor === 0) {
      return `${bytes / factor}${unit}`;
    }
  }
  return `${bytes}`;
}
