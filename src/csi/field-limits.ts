/**
 * The CSI spec's general size limits (spec.md, "Size Limits"): a string field holds at most 128 bytes and
 * a map<string, string> field at most 4 KiB, unless the field says otherwise. Paths override it ("SP
 * SHOULD support the maximum path length allowed by the operating system"), node_id allows 256 bytes.
 * The limits apply to the CO's messages too ("fields SHALL NOT exceed the limits"), so a request over one
 * is invalid: the pipeline answers INVALID_ARGUMENT before a handler sees it. Found by the hostile-input
 * suite: a 4 KiB CreateVolume name or a 5 KiB secrets map used to be accepted and acted on.
 *
 * Derived from csi.proto's reflection tree (like the secret redaction), so every string and map field of
 * every request is covered, however deeply nested.
 */
import protobuf from "protobufjs";

import { loadCsiProtoRoot } from "./proto.js";

export const MAX_STRING_BYTES = 128;
export const MAX_MAP_BYTES = 4096;

/** Fields whose own description overrides the general limit. */
const FIELD_OVERRIDES: Readonly<Record<string, number>> = {
  staging_target_path: Number.POSITIVE_INFINITY,
  target_path: Number.POSITIVE_INFINITY,
  volume_path: Number.POSITIVE_INFINITY,
  node_id: 256,
};

export class FieldLimits {
  private readonly requestTypes = new Map<string, protobuf.Type>();

  constructor(root: protobuf.Root = loadCsiProtoRoot()) {
    const visit = (namespace: protobuf.NamespaceBase): void => {
      for (const nested of namespace.nestedArray) {
        if (nested instanceof protobuf.Service) {
          const servicePath = nested.fullName.replace(/^\./, "");
          for (const method of nested.methodsArray) {
            method.resolve();
            if (method.resolvedRequestType !== null)
              this.requestTypes.set(`/${servicePath}/${method.name}`, method.resolvedRequestType);
          }
        } else if (nested instanceof protobuf.Namespace) {
          visit(nested);
        }
      }
    };
    visit(root);
  }

  /** Why the request to `methodPath` ("/csi.v1.Controller/CreateVolume") breaks a limit, if it does. */
  problem(methodPath: string, request: unknown): string | undefined {
    const type = this.requestTypes.get(methodPath);
    return type === undefined ? undefined : messageProblem(type, request, "");
  }
}

function messageProblem(type: protobuf.Type, value: unknown, prefix: string): string | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const record = value as Record<string, unknown>;
  for (const field of type.fieldsArray) {
    const fieldValue = record[field.name];
    if (fieldValue === undefined || fieldValue === null) continue;
    const name = `${prefix}${field.name}`;
    field.resolve();
    const nested = field.resolvedType instanceof protobuf.Type ? field.resolvedType : undefined;
    if (field.map) {
      const entries = Object.entries(fieldValue as Record<string, unknown>);
      if (nested) {
        for (const [key, item] of entries) {
          const problem = messageProblem(nested, item, `${name}[${key}].`);
          if (problem) return problem;
        }
        continue;
      }
      const bytes = entries.reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(String(v)), 0);
      if (bytes > MAX_MAP_BYTES)
        return `${name} holds ${bytes} bytes; CSI limits a map to ${MAX_MAP_BYTES} bytes`;
      continue;
    }
    const items = field.repeated && Array.isArray(fieldValue) ? fieldValue : [fieldValue];
    for (const item of items) {
      if (nested) {
        const problem = messageProblem(nested, item, `${name}.`);
        if (problem) return problem;
      } else if (field.type === "string" && typeof item === "string") {
        const limit = FIELD_OVERRIDES[field.name] ?? MAX_STRING_BYTES;
        const bytes = Buffer.byteLength(item);
        if (bytes > limit) return `${name} is ${bytes} bytes; CSI limits it to ${limit} bytes`;
      }
    }
  }
  return undefined;
}
