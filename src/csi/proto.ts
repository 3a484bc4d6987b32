/**
 * Loads csi-proto/csi.proto at run time, with the same options the generated types in src/generated/
 * were made with (scripts/gen-proto.mjs), so the types describe exactly what grpc-js hands us.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import protobuf from "protobufjs";

import type { ProtoGrpcType } from "../generated/csi.js";
import type { ControllerDefinition } from "../generated/csi/v1/Controller.js";
import type { IdentityDefinition } from "../generated/csi/v1/Identity.js";
import type { NodeDefinition } from "../generated/csi/v1/Node.js";
import { findPackageRoot } from "../util/package-info.js";

export const CSI_PROTO_FILE = "csi.proto";

export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Directories searched for csi.proto and its imports (google/protobuf/descriptor.proto ships with protobufjs). */
export function csiProtoIncludeDirs(): string[] {
  const require = createRequire(import.meta.url);
  const protobufjsDir = path.dirname(require.resolve("protobufjs/package.json"));
  return [path.join(findPackageRoot(), "csi-proto"), protobufjsDir];
}

export function csiProtoPath(): string {
  return path.join(findPackageRoot(), "csi-proto", CSI_PROTO_FILE);
}

export interface CsiServiceDefinitions {
  readonly identity: IdentityDefinition;
  readonly controller: ControllerDefinition;
  readonly node: NodeDefinition;
  /** The whole typed package, for clients (tests, the status command). */
  readonly grpcPackage: ProtoGrpcType;
}

let cachedDefinitions: CsiServiceDefinitions | undefined;

/** The typed service definitions; loaded once per process. */
export function loadCsiServices(): CsiServiceDefinitions {
  if (cachedDefinitions === undefined) {
    // Built from the one protobufjs parse that secret redaction also uses: parsing csi.proto twice cost
    // seconds of start-up where JavaScript is slow (the test VM), for the same tree.
    const packageDefinition = protoLoader.fromJSON(loadCsiProtoRoot().toJSON(), PROTO_LOADER_OPTIONS);
    // The generated ProtoGrpcType is the declared shape of exactly this call's result.
    const grpcPackage = grpc.loadPackageDefinition(packageDefinition) as unknown as ProtoGrpcType;
    cachedDefinitions = {
      identity: grpcPackage.csi.v1.Identity.service,
      controller: grpcPackage.csi.v1.Controller.service,
      node: grpcPackage.csi.v1.Node.service,
      grpcPackage,
    };
  }
  return cachedDefinitions;
}

let cachedRoot: protobuf.Root | undefined;

/**
 * The protobufjs reflection tree of csi.proto. proto-loader drops custom field options (csi_secret),
 * so code that needs them (secret redaction) reads this tree instead.
 */
export function loadCsiProtoRoot(): protobuf.Root {
  if (cachedRoot === undefined) {
    const includeDirs = csiProtoIncludeDirs();
    const root = new protobuf.Root();
    root.resolvePath = (origin: string, target: string): string => {
      if (path.isAbsolute(target)) {
        return target;
      }
      for (const dir of includeDirs) {
        const candidate = path.join(dir, target);
        if (existsSync(candidate)) {
          return candidate;
        }
      }
      // Well-known types (timestamp, wrappers) are built into protobufjs and resolve without a file.
      return protobuf.util.path.resolve(origin, target);
    };
    root.loadSync(CSI_PROTO_FILE, { keepCase: true });
    root.resolveAll();
    cachedRoot = root;
  }
  return cachedRoot;
}
