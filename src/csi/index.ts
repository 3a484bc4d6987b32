export { CsiError, statusName } from "./errors.js";
export { loadCsiServices, loadCsiProtoRoot, csiProtoPath, PROTO_LOADER_OPTIONS } from "./proto.js";
export type { CsiServiceDefinitions } from "./proto.js";
export { SecretRedactor, REDACTED } from "./secrets.js";
export * from "./types.js";
