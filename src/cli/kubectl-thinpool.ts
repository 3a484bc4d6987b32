#!/usr/bin/env node
/**
 * `kubectl thinpool [status] [-o text|json]`: the status of every node of the driver in one table. Finds
 * the driver pods (`kubectl get pods -l <chart labels>`), runs `thinpool-csi status -o json` in the driver
 * container of each (`kubectl exec`), and merges the answers. Installed as the executable
 * `kubectl-thinpool`, which kubectl runs as the `thinpool` plugin. Needs what kubectl needs for get pods
 * and pods/exec; nothing else.
 */
import { execFile } from "node:child_process";
import { parseArgs } from "node:util";

import type { NodeStatusReport } from "../server/node-status.js";
import { isEntryPoint } from "../util/entry-point.js";
import { errorMessage } from "../util/errors.js";
import { renderStatus } from "./status-render.js";

/** The chart's labels of the driver DaemonSet's pods, and its driver container. */
export const DEFAULT_SELECTOR = "app.kubernetes.io/name=thinpool-csi,app.kubernetes.io/component=node";
export const DEFAULT_CONTAINER = "thinpool-csi";
/** Nodes asked at once. */
const CONCURRENCY = 8;
const EXEC_TIMEOUT_MS = 60_000;

const USAGE = `Usage: kubectl thinpool [status] [flags]

Shows the pools, volumes, snapshots and faulty devices of every node running thinpool-csi.
  -o, --output       text (default) or json
  -n, --namespace    namespace of the driver pods (default: all namespaces)
  -l, --selector     label selector of the driver pods (default ${DEFAULT_SELECTOR})
  -c, --container    the driver container (default ${DEFAULT_CONTAINER})
      --context, --kubeconfig   passed to kubectl
The kubectl run is $KUBECTL, or kubectl from PATH.`;

export interface PluginIo {
  readonly env: NodeJS.ProcessEnv;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

interface DriverPod {
  readonly namespace: string;
  readonly name: string;
  readonly node: string;
  readonly phase: string;
}

export interface NodeFailure {
  readonly node: string;
  readonly pod: string;
  readonly error: string;
}

export interface ClusterStatus {
  readonly nodes: NodeStatusReport[];
  readonly failures: NodeFailure[];
}

/** Runs kubectl; a failure's message is `<what> failed: <kubectl's stderr>`. */
function runKubectl(kubectl: Kubectl, args: readonly string[], what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      kubectl.path,
      [...args],
      { env: kubectl.env, maxBuffer: 64 * 1024 * 1024, timeout: EXEC_TIMEOUT_MS },
      (error, stdout, stderr) => {
        if (error) {
          const detail = stderr.trim() || error.message;
          reject(new Error(`${what} failed: ${detail}`));
        } else {
          resolve(stdout);
        }
      },
    );
  });
}

/** The kubectl to run and its environment (PATH, KUBECONFIG). */
export interface Kubectl {
  readonly path: string;
  readonly env: NodeJS.ProcessEnv;
}

interface PodList {
  readonly items?: ReadonlyArray<{
    readonly metadata?: { readonly name?: string; readonly namespace?: string };
    readonly spec?: { readonly nodeName?: string };
    readonly status?: { readonly phase?: string };
  }>;
}

function parsePods(json: string): DriverPod[] {
  const list = JSON.parse(json) as PodList;
  return (list.items ?? []).map((pod) => ({
    namespace: pod.metadata?.namespace ?? "",
    name: pod.metadata?.name ?? "",
    node: pod.spec?.nodeName ?? "(unscheduled)",
    phase: pod.status?.phase ?? "Unknown",
  }));
}

/** Asks every driver pod; a pod that cannot answer is a failure, not an abort. */
export async function collectClusterStatus(
  kubectl: Kubectl,
  options: { namespace?: string; selector: string; container: string; global: readonly string[] },
): Promise<ClusterStatus> {
  const scope = options.namespace === undefined ? ["--all-namespaces"] : ["--namespace", options.namespace];
  const pods = parsePods(
    await runKubectl(
      kubectl,
      [...options.global, "get", "pods", ...scope, "-l", options.selector, "-o", "json"],
      "kubectl get pods",
    ),
  ).sort((a, b) => a.node.localeCompare(b.node));
  const nodes: NodeStatusReport[] = [];
  const failures: NodeFailure[] = [];
  let next = 0;
  const ask = async (): Promise<void> => {
    while (next < pods.length) {
      const pod = pods[next++] as DriverPod;
      if (pod.phase !== "Running") {
        failures.push({ node: pod.node, pod: `${pod.namespace}/${pod.name}`, error: `pod is ${pod.phase}` });
        continue;
      }
      try {
        const out = await runKubectl(
          kubectl,
          [
            ...options.global,
            "exec",
            "--namespace",
            pod.namespace,
            pod.name,
            "-c",
            options.container,
            "--",
            "thinpool-csi",
            "status",
            "-o",
            "json",
          ],
          `kubectl exec ${pod.name}`,
        );
        nodes.push(JSON.parse(out) as NodeStatusReport);
      } catch (error) {
        failures.push({ node: pod.node, pod: `${pod.namespace}/${pod.name}`, error: errorMessage(error) });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, pods.length) }, ask));
  nodes.sort((a, b) => a.node.localeCompare(b.node));
  failures.sort((a, b) => a.node.localeCompare(b.node));
  return { nodes, failures };
}

/** Returns the exit code: 0 when every node answered, 1 when some did not, 2 when none could be asked. */
export async function runKubectlThinpool(argv: readonly string[], io: PluginIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        output: { type: "string", short: "o", default: "text" },
        namespace: { type: "string", short: "n" },
        selector: { type: "string", short: "l", default: DEFAULT_SELECTOR },
        container: { type: "string", short: "c", default: DEFAULT_CONTAINER },
        context: { type: "string" },
        kubeconfig: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    io.stderr(`kubectl thinpool: ${errorMessage(error)}\n\n${USAGE}\n`);
    return 64;
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    io.stdout(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length > 1 || (positionals[0] !== undefined && positionals[0] !== "status")) {
    io.stderr(`kubectl thinpool: unknown command '${positionals.join(" ")}'\n\n${USAGE}\n`);
    return 64;
  }
  if (values.output !== "text" && values.output !== "json") {
    io.stderr(`kubectl thinpool: -o must be text or json, got '${values.output}'\n`);
    return 64;
  }
  const global = [
    ...(values.context === undefined ? [] : ["--context", values.context]),
    ...(values.kubeconfig === undefined ? [] : ["--kubeconfig", values.kubeconfig]),
  ];
  let status: ClusterStatus;
  try {
    status = await collectClusterStatus(
      { path: io.env.KUBECTL || "kubectl", env: io.env },
      {
        ...(values.namespace === undefined ? {} : { namespace: values.namespace }),
        selector: values.selector,
        container: values.container,
        global,
      },
    );
  } catch (error) {
    io.stderr(`kubectl thinpool: ${errorMessage(error)}\n`);
    return 2;
  }
  if (values.output === "json") {
    io.stdout(`${JSON.stringify(status, null, 2)}\n`);
  } else if (status.nodes.length === 0 && status.failures.length === 0) {
    io.stdout(`No thinpool-csi driver pods found (selector ${values.selector}).\n`);
  } else {
    if (status.nodes.length > 0) io.stdout(renderStatus(status.nodes, { nodeColumn: true }));
    if (status.failures.length > 0) {
      io.stdout(
        `\nNODES THAT DID NOT ANSWER (${status.failures.length})\n${status.failures
          .map((f) => `${f.node} (pod ${f.pod}): ${f.error}`)
          .join("\n")}\n`,
      );
    }
  }
  if (status.failures.length === 0) return 0;
  return status.nodes.length === 0 ? 2 : 1;
}

if (isEntryPoint(import.meta.url)) {
  runKubectlThinpool(process.argv.slice(2), {
    env: process.env,
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`kubectl thinpool: ${errorMessage(error)}\n`);
      process.exitCode = 1;
    },
  );
}
