import { status } from "@grpc/grpc-js";

import type { CapacityRange__Output } from "../generated/csi/v1/CapacityRange.js";
import { CsiError } from "./errors.js";

export interface ParsedCapacityRange {
  /** Absent: the caller did not ask for a size (0 means unspecified). */
  required?: number;
  /** Absent: no upper bound (0, or a bound above anything the driver can make). */
  limit?: number;
}

/**
 * Reads a CapacityRange (int64 fields arrive as decimal strings) with the codes the CSI spec names:
 * a negative value or limit < required is an invalid field (INVALID_ARGUMENT, "MUST NOT be negative");
 * a required size above `maxBytes`, the largest size the driver can represent, is an "Unsupported
 * capacity_range" (OUT_OF_RANGE); a limit above it bounds nothing and is dropped. Parsed with BigInt so
 * that 2^63-1 is not mistaken for a smaller number. Shared by CreateVolume and NodeExpandVolume; found by
 * the hostile-input suite (2^63-1 was INVALID_ARGUMENT, and a huge limit_bytes refused an 8 MiB volume).
 */
export function parseCapacityRange(
  range: CapacityRange__Output | null | undefined,
  maxBytes: number,
): ParsedCapacityRange {
  if (!range) return {};
  const read = (value: string | number | undefined, name: string): bigint => {
    try {
      return BigInt(value ?? 0);
    } catch {
      throw new CsiError(
        status.INVALID_ARGUMENT,
        `capacity_range.${name} '${String(value)}' is not a number`,
      );
    }
  };
  const required = read(range.required_bytes, "required_bytes");
  const limit = read(range.limit_bytes, "limit_bytes");
  if (required < 0n || limit < 0n) {
    throw new CsiError(
      status.INVALID_ARGUMENT,
      `capacity_range must hold non-negative byte counts, got required_bytes ${required}, limit_bytes ${limit}`,
    );
  }
  if (limit > 0n && required > limit)
    throw new CsiError(status.INVALID_ARGUMENT, `required_bytes ${required} exceeds limit_bytes ${limit}`);
  if (required > BigInt(maxBytes)) {
    throw new CsiError(
      status.OUT_OF_RANGE,
      `required_bytes ${required} is more than this driver can provide (at most ${maxBytes} bytes)`,
    );
  }
  return {
    ...(required > 0n ? { required: Number(required) } : {}),
    ...(limit > 0n && limit <= BigInt(maxBytes) ? { limit: Number(limit) } : {}),
  };
}

/** The largest multiple of `blockBytes` that is still a safe integer: sizes above it cannot be handled exactly. */
export function maxSizeBytes(blockBytes: number): number {
  return Math.floor(Number.MAX_SAFE_INTEGER / blockBytes) * blockBytes;
}
