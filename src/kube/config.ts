/**
 * Where the project's Kubernetes clients find the API server. One rule for every command that talks to
 * the API (the placement controller, `orphans`, the node's event recorder): an explicit kubeconfig wins,
 * then the pod's service account, then `KUBECONFIG` or `~/.kube/config`, as kubectl does.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { KubeConfigError, locateKubeConfig, type KubeConfigOrigin, type KubeConfigSource } from "./locate.js";

export {
  KubeConfigError,
  SERVICE_ACCOUNT_DIR,
  locateKubeConfig,
  type KubeConfigLocation,
  type KubeConfigOrigin,
  type KubeConfigSource,
} from "./locate.js";

export interface LoadedKubeConfig {
  readonly config: KubeConfig;
  readonly origin: KubeConfigOrigin;
  /** The API server URL, for logs. */
  readonly server: string;
}

export function loadKubeConfig(source: KubeConfigSource): LoadedKubeConfig {
  const config = new KubeConfig();
  const origin = loadInto(config, source);
  const cluster = config.getCurrentCluster();
  if (cluster === null) {
    throw new KubeConfigError(`the kubeconfig (${origin}) has no current context with a cluster`);
  }
  return { config, origin, server: cluster.server };
}

function loadInto(config: KubeConfig, source: KubeConfigSource): KubeConfigOrigin {
  const location = locateKubeConfig(source);
  if (location.origin === "in-cluster") loadInCluster(config, source, location.serviceAccountDir);
  else loadFile(config, location.path);
  return location.origin;
}

function loadFile(config: KubeConfig, path: string): void {
  try {
    config.loadFromFile(path);
  } catch (error) {
    throw new KubeConfigError(`kubeconfig ${path} cannot be read: ${(error as Error).message}`);
  }
}

function loadInCluster(config: KubeConfig, source: KubeConfigSource, saDir: string): void {
  const host = source.env["KUBERNETES_SERVICE_HOST"] ?? "";
  const port = source.env["KUBERNETES_SERVICE_PORT"] ?? "443";
  // An IPv6 service address needs brackets in a URL.
  const serverHost = host.includes(":") ? `[${host}]` : host;
  const namespaceFile = join(saDir, "namespace");
  config.loadFromOptions({
    clusters: [{ name: "inCluster", server: `https://${serverHost}:${port}`, caFile: join(saDir, "ca.crt") }],
    // The token file is re-read as it changes: projected tokens rotate (about hourly).
    users: [
      {
        name: "inClusterUser",
        authProvider: { name: "tokenFile", config: { tokenFile: join(saDir, "token") } },
      },
    ],
    contexts: [
      {
        name: "inCluster",
        cluster: "inCluster",
        user: "inClusterUser",
        // The pod's own namespace is the useful default for namespaced objects (the Lease).
        ...(existsSync(namespaceFile) ? { namespace: readFileSync(namespaceFile, "utf8").trim() } : {}),
      },
    ],
    currentContext: "inCluster",
  });
}

/** The current context's namespace (the pod's own when in a cluster), if the configuration names one. */
export function currentNamespace(config: KubeConfig): string | undefined {
  const context = config.getContextObject(config.getCurrentContext());
  return context?.namespace ?? undefined;
}
