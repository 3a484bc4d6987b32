/**
 * Where the project's Kubernetes clients find the API server. One rule for every command that talks to
 * the API (the placement controller, `orphans`, the node's event recorder): an explicit kubeconfig wins,
 * then the pod's service account, then `KUBECONFIG` or `~/.kube/config`, as kubectl does.
 */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";

/** The service account mount every pod gets unless `automountServiceAccountToken: false`. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** No way to reach the API server was found, or the one named could not be read. */
export class KubeConfigError extends Error {
  override readonly name = "KubeConfigError";
}

export interface KubeConfigSource {
  /** `--kubeconfig`: a file that must exist. */
  readonly kubeconfigPath?: string | undefined;
  readonly env: NodeJS.ProcessEnv;
  /** Tests point this elsewhere; defaults to SERVICE_ACCOUNT_DIR. */
  readonly serviceAccountDir?: string;
  /** Tests point this elsewhere; defaults to the user's home directory. */
  readonly homeDir?: string;
}

/** Which of the sources was used, for the start-up log line. */
export type KubeConfigOrigin = "kubeconfig-flag" | "in-cluster" | "KUBECONFIG" | "home";

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
  if (source.kubeconfigPath !== undefined && source.kubeconfigPath !== "") {
    loadFile(config, source.kubeconfigPath);
    return "kubeconfig-flag";
  }
  const saDir = source.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const host = source.env["KUBERNETES_SERVICE_HOST"];
  if (host !== undefined && host !== "" && existsSync(join(saDir, "token"))) {
    loadInCluster(config, source, saDir);
    return "in-cluster";
  }
  const fromEnv = source.env["KUBECONFIG"];
  if (fromEnv !== undefined && fromEnv !== "") {
    // kubectl merges a ':'-separated list; the first file is enough for the project's commands.
    const first = fromEnv.split(":").find((p) => p !== "");
    if (first !== undefined) {
      loadFile(config, first);
      return "KUBECONFIG";
    }
  }
  const home = join(source.homeDir ?? homedir(), ".kube", "config");
  if (existsSync(home)) {
    loadFile(config, home);
    return "home";
  }
  throw new KubeConfigError(
    "no Kubernetes API configuration: not in a pod (no KUBERNETES_SERVICE_HOST and service account token " +
      `in ${saDir}), no --kubeconfig, no KUBECONFIG and no ${home}`,
  );
}

function loadFile(config: KubeConfig, path: string): void {
  if (!existsSync(path)) {
    throw new KubeConfigError(`kubeconfig ${path} does not exist`);
  }
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
