/**
 * The request pipeline around every RPC: typed async handlers in, grpc-js unary implementations out.
 *
 * Per call, in this order: log the start (debug, secrets redacted) -> refuse with UNAVAILABLE while
 * shutting down -> UNIMPLEMENTED when no handler was given -> INVALID_ARGUMENT when a field breaks the
 * CSI size limits (128-byte strings, 4 KiB maps) -> ABORTED when an operation on the same
 * volume/snapshot is in flight -> run the handler -> map its error to a status -> log code and duration.
 */
import {
  status,
  type ServerUnaryCall,
  type sendUnaryData,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { MethodDefinition } from "@grpc/proto-loader";
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";

import { CsiError, statusName } from "../csi/errors.js";
import { FieldLimits } from "../csi/field-limits.js";
import type { SecretRedactor } from "../csi/secrets.js";
import type { MethodNames, RpcContext, ServiceHandlers } from "../csi/types.js";
import { errorMessage } from "../util/errors.js";
import { describeLockKey, type LockKey, type OperationLocks } from "./operation-locks.js";

/** Request fields copied onto every log line of a call, so one grep finds a volume's whole history. */
const LOGGED_REQUEST_FIELDS = [
  "volume_id",
  "snapshot_id",
  "source_volume_id",
  "name",
  "node_id",
  "staging_target_path",
  "target_path",
] as const;

/**
 * RPCs that COs call periodically (liveness, capacity tracking, volume stats) or that only read: their
 * successes are logged at debug, so the info log is a record of changes. Failures are always logged.
 */
const QUIET_METHODS: ReadonlySet<string> = new Set([
  "Probe",
  "GetPluginInfo",
  "GetPluginCapabilities",
  "ControllerGetCapabilities",
  "NodeGetCapabilities",
  "NodeGetInfo",
  "GetCapacity",
  "NodeGetVolumeStats",
  "ListVolumes",
  "ListSnapshots",
  "ControllerGetVolume",
  "GetSnapshot",
  "ValidateVolumeCapabilities",
]);

/** Status messages are shown to users by the CO; keep them readable. */
const MAX_STATUS_MESSAGE_LENGTH = 1024;

export interface InFlightCall {
  readonly callId: number;
  readonly method: string;
  readonly fields: Readonly<Record<string, string>>;
  readonly startedAt: number;
}

/** Told about every answered call (for metrics). */
export interface RpcObserver {
  /** `code` is the gRPC status name, e.g. "OK", "NOT_FOUND". */
  onRpcFinished(call: { method: string; code: string; durationSeconds: number }): void;
}

export interface RpcPipelineOptions {
  readonly logger: Logger;
  readonly redactor: SecretRedactor;
  readonly locks: OperationLocks;
  readonly observer?: RpcObserver;
  /** The CSI size limits every request is checked against; default: derived from csi.proto. */
  readonly fieldLimits?: FieldLimits;
}

/** Per-method lock key functions, see operation-locks.ts. */
export type LockKeyFunctions<Definition> = {
  readonly [Method in MethodNames<Definition>]?: (
    request: Parameters<ServiceHandlers<Definition>[Method]>[0],
  ) => LockKey[];
};

interface ErasedHandler {
  (request: unknown, context: RpcContext): Promise<unknown>;
}

export class RpcPipeline {
  private readonly logger: Logger;
  private readonly redactor: SecretRedactor;
  private readonly locks: OperationLocks;
  private readonly observer: RpcObserver | undefined;
  private readonly fieldLimits: FieldLimits;
  private readonly inFlight = new Map<number, InFlightCall>();
  private readonly idleWaiters: Array<() => void> = [];
  private nextCallId = 1;
  private draining = false;

  constructor(options: RpcPipelineOptions) {
    this.logger = options.logger;
    this.redactor = options.redactor;
    this.locks = options.locks;
    this.observer = options.observer;
    this.fieldLimits = options.fieldLimits ?? new FieldLimits();
  }

  /**
   * A grpc-js implementation of every method of `definition`: the given handlers run through the
   * pipeline, the missing ones answer UNIMPLEMENTED.
   */
  implement<Definition extends object>(
    definition: Definition,
    handlers: Partial<ServiceHandlers<Definition>>,
    lockKeys: LockKeyFunctions<Definition> = {},
  ): UntypedServiceImplementation {
    const implementation: UntypedServiceImplementation = {};
    // The typed maps are erased to one shape here: the generated definition guarantees that grpc-js
    // decodes each method's request into exactly the type its handler declares.
    const erasedHandlers = handlers as Readonly<Record<string, ErasedHandler | undefined>>;
    const erasedLockKeys = lockKeys as Readonly<
      Record<string, ((request: unknown) => LockKey[]) | undefined>
    >;
    for (const [method, methodDefinition] of Object.entries(definition) as Array<
      [string, MethodDefinition<unknown, unknown>]
    >) {
      const handler = erasedHandlers[method];
      const keysOf = erasedLockKeys[method];
      implementation[method] = (
        call: ServerUnaryCall<unknown, unknown>,
        callback: sendUnaryData<unknown>,
      ): void => {
        void this.handle(method, methodDefinition, handler, keysOf, call, callback);
      };
    }
    return implementation;
  }

  /** From now on every new call gets UNAVAILABLE; calls already running go on. */
  startDraining(): void {
    this.draining = true;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  inFlightCalls(): InFlightCall[] {
    return [...this.inFlight.values()];
  }

  /** Resolves once no handler is running (immediately if none is). */
  whenIdle(): Promise<void> {
    if (this.inFlight.size === 0) {
      return Promise.resolve();
    }
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async handle(
    method: string,
    methodDefinition: MethodDefinition<unknown, unknown>,
    handler: ErasedHandler | undefined,
    keysOf: ((request: unknown) => LockKey[]) | undefined,
    call: ServerUnaryCall<unknown, unknown>,
    callback: sendUnaryData<unknown>,
  ): Promise<void> {
    const callId = this.nextCallId++;
    const startedAt = performance.now();
    const request = call.request;
    const redactedRequest = this.redactor.redactRequest(methodDefinition.path, request);
    const fields = pickLogFields(redactedRequest);
    const logger = this.logger.child({ rpc: method, call_id: callId, ...fields });
    logger.debug({ request: redactedRequest }, "rpc started");

    const reply = (code: status, message: string, response?: unknown, error?: unknown): void => {
      if (code === status.OK) {
        callback(null, response);
      } else {
        callback({ code, details: message });
      }
      const elapsedMs = performance.now() - startedAt;
      const durationMs = Math.round(elapsedMs * 1000) / 1000;
      const line: Record<string, unknown> = { code: statusName(code), duration_ms: durationMs };
      this.observer?.onRpcFinished({ method, code: statusName(code), durationSeconds: elapsedMs / 1000 });
      if (code === status.OK) {
        if (logger.isLevelEnabled("debug")) {
          line.response = this.redactor.redactResponse(methodDefinition.path, response);
        }
        logger[QUIET_METHODS.has(method) ? "debug" : "info"](line, "rpc finished");
      } else if (code === status.INTERNAL || !(error === undefined || error instanceof CsiError)) {
        logger.error({ ...line, status_message: message, err: error }, "rpc failed");
      } else {
        logger.warn({ ...line, status_message: message }, "rpc failed");
      }
    };

    if (this.draining) {
      reply(status.UNAVAILABLE, "the driver is shutting down; retry when it is back");
      return;
    }
    if (handler === undefined) {
      reply(status.UNIMPLEMENTED, `${method} is not implemented by this driver`);
      return;
    }
    // Before the lock: an over-long id must not even take a lock or reach a handler.
    const tooLong = this.fieldLimits.problem(methodDefinition.path, request);
    if (tooLong !== undefined) {
      reply(status.INVALID_ARGUMENT, tooLong);
      return;
    }
    let keys: LockKey[];
    try {
      keys = keysOf?.(request) ?? [];
    } catch (error) {
      reply(status.INTERNAL, internalMessage(method, error), undefined, error);
      return;
    }
    const lock = this.locks.tryAcquire(keys);
    if (!lock.acquired) {
      reply(status.ABORTED, `an operation on ${describeLockKey(lock.conflict)} is already in progress`);
      return;
    }

    const abortController = new AbortController();
    const onCancelled = (): void => {
      abortController.abort(new Error(`${method} was cancelled by the caller or its deadline passed`));
      logger.info("caller cancelled the call or its deadline passed; the operation runs to its end");
    };
    call.once("cancelled", onCancelled);
    this.inFlight.set(callId, { callId, method, fields, startedAt: Date.now() });
    try {
      const response = await handler(request, { method, logger, signal: abortController.signal });
      if (response === undefined || response === null) {
        throw new Error(`the ${method} handler returned no response`);
      }
      try {
        // Encode once here so that a handler returning a malformed response is reported as such,
        // with the handler's name, instead of as an opaque serialization failure inside grpc-js.
        methodDefinition.responseSerialize(response);
      } catch (error) {
        throw new Error(
          `the ${method} handler returned a response that cannot be encoded: ${errorMessage(error)}`,
          {
            cause: error,
          },
        );
      }
      reply(status.OK, "", response);
    } catch (error) {
      if (error instanceof CsiError) {
        reply(error.code, error.message, undefined, error);
      } else {
        reply(status.INTERNAL, internalMessage(method, error), undefined, error);
      }
    } finally {
      call.removeListener("cancelled", onCancelled);
      lock.release();
      this.inFlight.delete(callId);
      if (this.inFlight.size === 0) {
        for (const resolve of this.idleWaiters.splice(0)) {
          resolve();
        }
      }
    }
  }
}

/** What the CO shows for an unexpected error: the cause in one line, never a stack trace. */
function internalMessage(method: string, error: unknown): string {
  const cause = errorMessage(error).trim() || "unknown error";
  const message = `${method} failed: ${cause} (unexpected error; the driver log has the details)`;
  return message.length > MAX_STATUS_MESSAGE_LENGTH
    ? `${message.slice(0, MAX_STATUS_MESSAGE_LENGTH - 3)}...`
    : message;
}

function pickLogFields(request: unknown): Record<string, string> {
  const fields: Record<string, string> = {};
  if (typeof request !== "object" || request === null) {
    return fields;
  }
  const record = request as Record<string, unknown>;
  for (const name of LOGGED_REQUEST_FIELDS) {
    const value = record[name];
    if (typeof value === "string" && value !== "") {
      fields[name] = value;
    }
  }
  // CreateVolume's source lives in a oneof message.
  const source = record.volume_content_source as
    | { snapshot?: { snapshot_id?: unknown } | null; volume?: { volume_id?: unknown } | null }
    | null
    | undefined;
  const sourceSnapshot = source?.snapshot?.snapshot_id;
  const sourceVolume = source?.volume?.volume_id;
  if (typeof sourceSnapshot === "string" && sourceSnapshot !== "") {
    fields.source_snapshot_id = sourceSnapshot;
  }
  if (typeof sourceVolume === "string" && sourceVolume !== "") {
    fields.source_volume_id = sourceVolume;
  }
  return fields;
}
