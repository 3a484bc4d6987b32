/**
 * Redaction of the fields csi.proto marks `[(csi_secret) = true]`. The list is derived from the proto's
 * field options at start-up, not kept by hand, so a new secret field in a future CSI version is covered
 * by updating csi-proto/ alone.
 */
import protobuf from "protobufjs";

import { loadCsiProtoRoot } from "./proto.js";

export const REDACTED = "[REDACTED]";

const CSI_SECRET_EXTENSION = "csi.v1.csi_secret";

export class SecretRedactor {
  /** Message full name (".csi.v1.CreateVolumeRequest") -> names of its csi_secret fields. */
  readonly secretFieldsByType: ReadonlyMap<string, ReadonlySet<string>>;
  private readonly typesByMethodPath: ReadonlyMap<
    string,
    { request: protobuf.Type; response: protobuf.Type }
  >;
  private readonly holdsSecrets = new Map<protobuf.Type, boolean>();

  constructor(root: protobuf.Root = loadCsiProtoRoot()) {
    const extension = root.lookup(CSI_SECRET_EXTENSION);
    if (!(extension instanceof protobuf.Field)) {
      throw new Error(`csi.proto does not declare the ${CSI_SECRET_EXTENSION} field option`);
    }
    const secretFields = new Map<string, Set<string>>();
    const methods = new Map<string, { request: protobuf.Type; response: protobuf.Type }>();
    for (const type of allNested(root)) {
      if (type instanceof protobuf.Type) {
        for (const field of type.fieldsArray) {
          if (isMarkedWith(field, extension)) {
            const names = secretFields.get(type.fullName) ?? new Set<string>();
            names.add(field.name);
            secretFields.set(type.fullName, names);
          }
        }
      } else if (type instanceof protobuf.Service) {
        // ".csi.v1.Controller" -> "/csi.v1.Controller/CreateVolume", the path grpc-js reports.
        const servicePath = type.fullName.replace(/^\./, "");
        for (const method of type.methodsArray) {
          method.resolve();
          if (method.resolvedRequestType !== null && method.resolvedResponseType !== null) {
            methods.set(`/${servicePath}/${method.name}`, {
              request: method.resolvedRequestType,
              response: method.resolvedResponseType,
            });
          }
        }
      }
    }
    this.secretFieldsByType = secretFields;
    this.typesByMethodPath = methods;
  }

  /** A copy of `request` (of the RPC at `methodPath`, e.g. "/csi.v1.Node/NodeStageVolume") fit to log. */
  redactRequest(methodPath: string, request: unknown): unknown {
    const types = this.typesByMethodPath.get(methodPath);
    return types === undefined ? request : this.redact(types.request, request);
  }

  redactResponse(methodPath: string, response: unknown): unknown {
    const types = this.typesByMethodPath.get(methodPath);
    return types === undefined ? response : this.redact(types.response, response);
  }

  private redact(type: protobuf.Type, value: unknown): unknown {
    if (!this.typeHoldsSecrets(type, new Set()) || typeof value !== "object" || value === null) {
      return value;
    }
    const secretNames = this.secretFieldsByType.get(type.fullName);
    const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) };
    for (const field of type.fieldsArray) {
      const fieldValue = copy[field.name];
      if (fieldValue === undefined || fieldValue === null) {
        continue;
      }
      if (secretNames?.has(field.name)) {
        copy[field.name] = REDACTED;
        continue;
      }
      const nested = field.resolvedType;
      if (!(nested instanceof protobuf.Type)) {
        continue;
      }
      if (field.map && typeof fieldValue === "object") {
        copy[field.name] = Object.fromEntries(
          Object.entries(fieldValue as Record<string, unknown>).map(([key, item]) => [
            key,
            this.redact(nested, item),
          ]),
        );
      } else if (Array.isArray(fieldValue)) {
        copy[field.name] = fieldValue.map((item: unknown) => this.redact(nested, item));
      } else {
        copy[field.name] = this.redact(nested, fieldValue);
      }
    }
    return copy;
  }

  /** Whether a message of `type` can carry a secret anywhere inside it (so others are logged as they are). */
  private typeHoldsSecrets(type: protobuf.Type, visiting: Set<protobuf.Type>): boolean {
    const known = this.holdsSecrets.get(type);
    if (known !== undefined) {
      return known;
    }
    if (visiting.has(type)) {
      return false;
    }
    visiting.add(type);
    let result = this.secretFieldsByType.has(type.fullName);
    for (const field of type.fieldsArray) {
      if (result) {
        break;
      }
      const nested = field.resolvedType;
      if (nested instanceof protobuf.Type) {
        result = this.typeHoldsSecrets(nested, visiting);
      }
    }
    visiting.delete(type);
    this.holdsSecrets.set(type, result);
    return result;
  }
}

function* allNested(namespace: protobuf.NamespaceBase): Generator<protobuf.ReflectionObject> {
  for (const nested of namespace.nestedArray) {
    yield nested;
    if (
      nested instanceof protobuf.Namespace ||
      nested instanceof protobuf.Type ||
      nested instanceof protobuf.Service
    ) {
      yield* allNested(nested);
    }
  }
}

/**
 * protobufjs keeps custom options under their source spelling, e.g. "(csi_secret)" inside package csi.v1
 * or "(csi.v1.csi_secret)" elsewhere; resolve that name from the field's scope and compare with the
 * declared extension instead of matching strings.
 */
function isMarkedWith(field: protobuf.Field, extension: protobuf.Field): boolean {
  const options = field.options;
  if (options === undefined || field.parent === null) {
    return false;
  }
  for (const [key, value] of Object.entries(options)) {
    const match = /^\((.+)\)$/.exec(key);
    if (match === null || value !== true) {
      continue;
    }
    const target = field.parent.lookup((match[1] as string).replace(/^\./, ""));
    if (target === extension || (target instanceof protobuf.Field && target.declaringField === extension)) {
      return true;
    }
  }
  return false;
}
