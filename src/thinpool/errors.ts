/**
 * Typed errors of the thin-pool engine. Every failure of a host command carries the command line,
 * the errno the kernel reported (parsed from the tool's stderr, since dmsetup reports strerror text)
 * and the kernel's message, so an operator can see exactly which ioctl failed and why.
 */

export type Errno =
  | "EBUSY"
  | "ENXIO"
  | "ENODATA"
  | "EEXIST"
  | "EINVAL"
  | "ENOSPC"
  | "ENOENT"
  | "EPERM"
  | "EIO"
  | "ENOMEM"
  | "ETIMEDOUT"
  | "EOPNOTSUPP"
  | "UNKNOWN";

/** strerror(3) texts as printed by libdevmapper and util-linux, mapped back to errno names. */
const STRERROR_TO_ERRNO: ReadonlyArray<readonly [RegExp, Errno]> = [
  [/Device or resource busy/i, "EBUSY"],
  [/No such device or address/i, "ENXIO"],
  [/No data available/i, "ENODATA"],
  [/File exists/i, "EEXIST"],
  [/Invalid argument/i, "EINVAL"],
  [/No space left on device/i, "ENOSPC"],
  [/No such file or directory/i, "ENOENT"],
  [/Operation not permitted|Permission denied/i, "EPERM"],
  [/Input\/output error/i, "EIO"],
  [/Cannot allocate memory/i, "ENOMEM"],
  // dm-thin's answer to every pool message while the pool is read-only (out of metadata space, needs_check).
  [/Operation not supported/i, "EOPNOTSUPP"],
  // dmsetup's own wording when a named device does not exist.
  [/Device .* not found|does not exist/i, "ENXIO"],
];

export function errnoFromMessage(stderr: string): Errno {
  for (const [pattern, errno] of STRERROR_TO_ERRNO) {
    if (pattern.test(stderr)) return errno;
  }
  return "UNKNOWN";
}

/** A host command (dmsetup, blkdiscard, losetup, ...) exited non-zero, timed out, or could not start. */
export class CommandError extends Error {
  override readonly name = "CommandError";
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly errno: Errno,
    /** The kernel's or tool's own message: stderr with the noise trimmed. */
    readonly kernelMessage: string,
    readonly timedOut = false,
  ) {
    super(
      `${command} ${args.join(" ")} failed` +
        (timedOut ? " (timed out)" : exitCode === null ? "" : ` (exit ${exitCode})`) +
        (errno === "UNKNOWN" ? "" : ` [${errno}]`) +
        (kernelMessage ? `: ${kernelMessage}` : ""),
    );
  }
}

/** What went wrong, in terms the CSI layer can translate to a gRPC code without knowing dm. */
export type EngineErrorCode =
  | "NotFound"
  | "AlreadyExists"
  | "InvalidArgument"
  | "OutOfRange"
  | "NoSpace"
  | "Busy"
  | "Faulty"
  | "PoolUnavailable"
  | "Internal";

export class EngineError extends Error {
  override readonly name = "EngineError";
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isErrno(err: unknown, ...errnos: Errno[]): err is CommandError {
  return err instanceof CommandError && errnos.includes(err.errno);
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Kernel answers mapped to what they mean for the caller. */
export function asEngineError(err: unknown, what: string): EngineError {
  if (err instanceof EngineError) return err;
  if (err instanceof CommandError) {
    const code =
      err.errno === "ENOSPC"
        ? "NoSpace"
        : err.errno === "EBUSY"
          ? "Busy"
          : err.errno === "ENXIO"
            ? "NotFound"
            : err.errno === "EOPNOTSUPP"
              ? "PoolUnavailable"
              : "Internal";
    return new EngineError(code, `${what}: ${err.message}`, { cause: err });
  }
  return new EngineError("Internal", `${what}: ${describe(err)}`, { cause: err });
}
