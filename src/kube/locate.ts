/**
 * Where the API configuration is, found without @kubernetes/client-node (see config.ts for the rule): the
 * driver decides at start-up whether it can raise Events, but loads the client only to send one.
 */
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

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

/** Where the configuration is, found without loading the client library. */
export type KubeConfigLocation =
  | { readonly origin: "in-cluster"; readonly serviceAccountDir: string }
  | { readonly origin: Exclude<KubeConfigOrigin, "in-cluster">; readonly path: string };

/** Finds the API configuration (first match wins), or throws a KubeConfigError saying what was tried. */
export function locateKubeConfig(source: KubeConfigSource): KubeConfigLocation {
  if (source.kubeconfigPath !== undefined && source.kubeconfigPath !== "") {
    return { origin: "kubeconfig-flag", path: existing(source.kubeconfigPath) };
  }
  const saDir = source.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const host = source.env["KUBERNETES_SERVICE_HOST"];
  if (host !== undefined && host !== "" && existsSync(join(saDir, "token"))) {
    return { origin: "in-cluster", serviceAccountDir: saDir };
  }
  const fromEnv = source.env["KUBECONFIG"];
  if (fromEnv !== undefined && fromEnv !== "") {
    // kubectl merges a ':'-separated list; the first file is enough for the project's commands.
    const first = fromEnv.split(":").find((p) => p !== "");
    if (first !== undefined) return { origin: "KUBECONFIG", path: existing(first) };
  }
  const home = join(source.homeDir ?? homedir(), ".kube", "config");
  if (existsSync(home)) return { origin: "home", path: home };
  throw new KubeConfigError(
    "no Kubernetes API configuration: not in a pod (no KUBERNETES_SERVICE_HOST and service account token " +
      `in ${saDir}), no --kubeconfig, no KUBECONFIG and no ${home}`,
  );
}

function existing(path: string): string {
  if (!existsSync(path)) throw new KubeConfigError(`kubeconfig ${path} does not exist`);
  return path;
}
