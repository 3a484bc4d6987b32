import { status } from "@grpc/grpc-js";

/**
 * An error whose gRPC status code and message go to the caller as they are. Throw it from a handler for
 * every outcome the CSI spec assigns a code to; anything else a handler throws becomes INTERNAL.
 *
 *   throw new CsiError(status.NOT_FOUND, "volume vol-x not found on node n1");
 */
export class CsiError extends Error {
  override readonly name = "CsiError";

  constructor(
    readonly code: status,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** "NOT_FOUND" for 5, for logs. */
export function statusName(code: status): string {
  return status[code] ?? `UNKNOWN_CODE_${code}`;
}
