/**
 * The types handler authors write against. Requests are what grpc-js hands us (the generated `__Output`
 * types: every scalar defaulted, enums as strings, int64 as decimal strings); responses are the
 * permissive generated input types (optional fields, enums as names or numbers, int64 as string or
 * number).
 *
 * Import from here (or src/csi/index.js), not from src/generated: the generated `ControllerHandlers` etc.
 * are grpc-js callback signatures, which this project does not use.
 */
import type { Logger } from "pino";

import type { ControllerDefinition } from "../generated/csi/v1/Controller.js";
import type { IdentityDefinition } from "../generated/csi/v1/Identity.js";
import type { NodeDefinition } from "../generated/csi/v1/Node.js";

/** The method names of a generated service definition (its string index signature removed). */
export type MethodNames<Definition> = keyof {
  [K in keyof Definition as string extends K ? never : K]: Definition[K];
} &
  string;

/** The decoded request a handler receives (read from the method's deserializer). */
export type RequestOf<Definition, Method extends keyof Definition> = Definition[Method] extends {
  requestDeserialize: (bytes: Buffer) => infer RequestOut;
}
  ? RequestOut
  : never;

/** The response a handler returns (the permissive input type of the method's serializer). */
export type ResponseOf<Definition, Method extends keyof Definition> = Definition[Method] extends {
  responseSerialize: (value: infer ResponseIn) => Buffer;
}
  ? ResponseIn
  : never;

/** What every handler gets besides the request. */
export interface RpcContext {
  /** The RPC's method name, e.g. "CreateVolume". */
  readonly method: string;
  /** A child logger that already carries the RPC name, the call id and the request's volume/snapshot ids. */
  readonly logger: Logger;
  /**
   * Aborted when the caller cancels or its deadline passes. Operations that change state should NOT
   * stop halfway because of it (the CO retries, idempotently); it is for long waits that may give up.
   */
  readonly signal: AbortSignal;
}

export type UnaryHandler<Request, Response> = (request: Request, context: RpcContext) => Promise<Response>;

/** A typed map of `async (request, context) => response` functions, one per RPC of a service. */
export type ServiceHandlers<Definition> = {
  [Method in MethodNames<Definition>]: UnaryHandler<
    RequestOf<Definition, Method>,
    ResponseOf<Definition, Method>
  >;
};

export type IdentityMethod = MethodNames<IdentityDefinition>;
export type ControllerMethod = MethodNames<ControllerDefinition>;
export type NodeMethod = MethodNames<NodeDefinition>;

export type IdentityRequest<M extends IdentityMethod> = RequestOf<IdentityDefinition, M>;
export type IdentityResponse<M extends IdentityMethod> = ResponseOf<IdentityDefinition, M>;
export type ControllerRequest<M extends ControllerMethod> = RequestOf<ControllerDefinition, M>;
export type ControllerResponse<M extends ControllerMethod> = ResponseOf<ControllerDefinition, M>;
export type NodeRequest<M extends NodeMethod> = RequestOf<NodeDefinition, M>;
export type NodeResponse<M extends NodeMethod> = ResponseOf<NodeDefinition, M>;

/** Identity is served by this project in full (src/identity/identity-service.ts). */
export type IdentityHandlers = ServiceHandlers<IdentityDefinition>;
/** Controller RPCs that are left out answer UNIMPLEMENTED. */
export type ControllerHandlers = Partial<ServiceHandlers<ControllerDefinition>>;
/** Node RPCs that are left out answer UNIMPLEMENTED. */
export type NodeHandlers = Partial<ServiceHandlers<NodeDefinition>>;

export type { ControllerDefinition, IdentityDefinition, NodeDefinition };

// Enum value maps (name -> name), handy for building capability lists without string typos.
export { _csi_v1_PluginCapability_Service_Type as PluginServiceType } from "../generated/csi/v1/PluginCapability.js";
export { _csi_v1_PluginCapability_VolumeExpansion_Type as PluginVolumeExpansionType } from "../generated/csi/v1/PluginCapability.js";
export { _csi_v1_ControllerServiceCapability_RPC_Type as ControllerCapabilityType } from "../generated/csi/v1/ControllerServiceCapability.js";
export { _csi_v1_NodeServiceCapability_RPC_Type as NodeCapabilityType } from "../generated/csi/v1/NodeServiceCapability.js";
export { _csi_v1_VolumeCapability_AccessMode_Mode as AccessModeType } from "../generated/csi/v1/VolumeCapability.js";
