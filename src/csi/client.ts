import * as grpc from "@grpc/grpc-js";
import { loadCsiServices } from "./proto.js";
import type {
  ControllerMethod,
  ControllerRequest,
  IdentityMethod,
  IdentityRequest,
  NodeMethod,
  NodeRequest,
} from "./types.js";
import type { ControllerDefinition } from "../generated/csi/v1/Controller.js";
import type { IdentityDefinition } from "../generated/csi/v1/Identity.js";
import type { NodeDefinition } from "../generated/csi/v1/Node.js";
import type { MethodDefinition } from "@grpc/proto-loader";

type InputOf<D, M extends keyof D> =
  D[M] extends MethodDefinition<infer RequestIn, infer _A, infer _B, infer _C> ? RequestIn : never;
type OutputOf<D, M extends keyof D> =
  D[M] extends MethodDefinition<infer _A, infer _B, infer _C, infer ResponseOut> ? ResponseOut : never;

type UnaryCallback = (err: grpc.ServiceError | null, value?: unknown) => void;
type UnaryFn = (
  request: unknown,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: UnaryCallback,
) => void;

/**
 * A promise-based CSI client over a unix socket, as kubelet and the sidecars talk to the driver.
 * `authority` defaults to "localhost", which is what kubelet sends since Kubernetes 1.26.
 */
export class CsiClient {
  private readonly clients: Record<"identity" | "controller" | "node", grpc.Client>;

  constructor(socketPath: string, options: { authority?: string } = {}) {
    const services = loadCsiServices();
    const channelOptions = { "grpc.default_authority": options.authority ?? "localhost" };
    const make = (definition: grpc.ServiceDefinition, name: string) => {
      const Ctor = grpc.makeGenericClientConstructor(definition, name);
      return new Ctor(`unix:${socketPath}`, grpc.credentials.createInsecure(), channelOptions);
    };
    this.clients = {
      identity: make(services.identity as unknown as grpc.ServiceDefinition, "Identity"),
      controller: make(services.controller as unknown as grpc.ServiceDefinition, "Controller"),
      node: make(services.node as unknown as grpc.ServiceDefinition, "Node"),
    };
  }

  private call<T>(
    service: keyof CsiClient["clients"],
    method: string,
    request: unknown,
    timeoutMs: number,
  ): Promise<T> {
    const client = this.clients[service] as unknown as Record<string, UnaryFn>;
    const fn = client[method];
    if (!fn) return Promise.reject(new Error(`no method ${method} on ${service}`));
    return new Promise<T>((resolve, reject) => {
      fn.call(client, request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, value) =>
        err ? reject(err) : resolve(value as T),
      );
    });
  }

  identity<M extends IdentityMethod>(
    method: M,
    request: InputOf<IdentityDefinition, M>,
    timeoutMs = 60_000,
  ): Promise<OutputOf<IdentityDefinition, M>> {
    return this.call("identity", method, request, timeoutMs);
  }

  controller<M extends ControllerMethod>(
    method: M,
    request: InputOf<ControllerDefinition, M>,
    timeoutMs = 120_000,
  ): Promise<OutputOf<ControllerDefinition, M>> {
    return this.call("controller", method, request, timeoutMs);
  }

  node<M extends NodeMethod>(
    method: M,
    request: InputOf<NodeDefinition, M>,
    timeoutMs = 120_000,
  ): Promise<OutputOf<NodeDefinition, M>> {
    return this.call("node", method, request, timeoutMs);
  }

  close(): void {
    for (const client of Object.values(this.clients)) client.close();
  }
}

export type { ControllerRequest, IdentityRequest, NodeRequest };
