/**
 * The project's small Kubernetes layer, on @kubernetes/client-node:
 * - `loadKubeConfig`: where the API server is (flag, in-cluster, KUBECONFIG, ~/.kube/config), or a
 *   `KubeConfigError` saying what was tried;
 * - `makeKubeClients`: the typed API groups from one config; `MERGE_PATCH` for `patch*` calls;
 *   `isNotFound` / `isConflict` / `apiStatus` for API errors;
 * - `EventRecorder.recordEvent`: core/v1 Events on any object, merged on repeat, rate-limited per object,
 *   never throwing into the caller.
 * Host tests run this against test/support/fake-kube-api.ts, a local stand-in for the API server.
 */
export {
  KubeConfigError,
  currentNamespace,
  loadKubeConfig,
  type KubeConfigSource,
  type LoadedKubeConfig,
} from "./config.js";
export {
  MERGE_PATCH,
  apiStatus,
  isConflict,
  isNotFound,
  makeKubeClients,
  type KubeClients,
} from "./clients.js";
export { EventRecorder, type EventRecorderOptions, type EventType, type InvolvedObject } from "./events.js";
