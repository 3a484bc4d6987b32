/**
 * The API groups the project uses, made from one KubeConfig, and the two facts about API errors its
 * callers branch on (not found, conflict). Everything else about an API error is only logged.
 */
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  StorageV1Api,
  setHeaderOptions,
  type ConfigurationOptions,
  type KubeConfig,
} from "@kubernetes/client-node";

export interface KubeClients {
  readonly config: KubeConfig;
  readonly core: CoreV1Api;
  readonly storage: StorageV1Api;
  readonly coordination: CoordinationV1Api;
  /** snapshot.storage.k8s.io (VolumeSnapshots, VolumeSnapshotContents) has no typed client. */
  readonly custom: CustomObjectsApi;
}

export function makeKubeClients(config: KubeConfig): KubeClients {
  return {
    config,
    core: config.makeApiClient(CoreV1Api),
    storage: config.makeApiClient(StorageV1Api),
    coordination: config.makeApiClient(CoordinationV1Api),
    custom: config.makeApiClient(CustomObjectsApi),
  };
}

/**
 * Options for a `patch*` call that sends a JSON merge patch (RFC 7386). The generated client would
 * otherwise send `application/json-patch+json`, which expects a list of operations.
 */
export const MERGE_PATCH: ConfigurationOptions = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

/** The HTTP status of an API error, or undefined for anything else (network, TLS, a bug). */
export function apiStatus(error: unknown): number | undefined {
  return error instanceof ApiException ? (error as ApiException<unknown>).code : undefined;
}

export function isNotFound(error: unknown): boolean {
  return apiStatus(error) === 404;
}

/** 409: the object changed since it was read (stale resourceVersion) or already exists. */
export function isConflict(error: unknown): boolean {
  return apiStatus(error) === 409;
}
