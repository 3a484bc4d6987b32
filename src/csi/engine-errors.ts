import { status } from "@grpc/grpc-js";
import { EngineError } from "../thinpool/errors.js";
import { CsiError } from "./errors.js";

/** Engine outcomes mapped to the codes the CSI spec assigns (and the sidecars act on). */
const CODES: Record<EngineError["code"], status> = {
  NotFound: status.NOT_FOUND,
  AlreadyExists: status.ALREADY_EXISTS,
  InvalidArgument: status.INVALID_ARGUMENT,
  OutOfRange: status.OUT_OF_RANGE,
  // RESOURCE_EXHAUSTED makes the provisioner drop the selected node and reschedule.
  NoSpace: status.RESOURCE_EXHAUSTED,
  Busy: status.FAILED_PRECONDITION,
  Faulty: status.FAILED_PRECONDITION,
  PoolUnavailable: status.UNAVAILABLE,
  Internal: status.INTERNAL,
};

/** Runs an engine call and rethrows its typed failure as the matching CsiError. */
export async function engineCall<T>(fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof EngineError) throw new CsiError(CODES[err.code], err.message, { cause: err });
    throw err;
  }
}
