/**
 * `thinpool-csi placement-controller`: runs the placement controller (controller.ts) under leader
 * election, until SIGTERM/SIGINT, which stop it and release the Lease so another replica takes over at once.
 */
import { hostname } from "node:os";

import { flagsUsage, parseCommandFlags, type FlagSpec } from "../cli/flags.js";
import { EventRecorder, currentNamespace, loadKubeConfig, makeKubeClients } from "../kube/index.js";
import { LeaderElector } from "../kube/leader-election.js";
import { ConfigError } from "../server/config.js";
import { TOPOLOGY_KEY_SUFFIX } from "../server/engine-wiring.js";
import { LOG_LEVELS, createLogger } from "../server/logger.js";
import { parseDuration } from "../util/duration.js";
import { errorMessage } from "../util/errors.js";
import { PlacementController } from "./controller.js";

export const PLACEMENT_FLAGS = {
  kubeconfig: {
    help: "kubeconfig file; default: the pod's service account, else KUBECONFIG, else ~/.kube/config",
  },
  "driver-name": {
    env: "DRIVER_NAME",
    default: "thinpool.csi.dev",
    help: "CSI driver name whose claims are placed",
  },
  "lease-name": {
    default: "thinpool-csi-placement",
    help: "name of the coordination.k8s.io Lease for leader election",
  },
  "lease-namespace": { env: "NAMESPACE", help: "namespace of the Lease; default: the pod's namespace" },
  identity: { env: "POD_NAME", help: "this replica's name in the Lease; default: the host name" },
  "lease-duration": { default: "15s", help: "how long a Lease not renewed stays taken" },
  "renew-deadline": { default: "10s", help: "a leader that could not renew for this long stops acting" },
  "retry-period": { default: "2s", help: "how often candidates try and the leader renews" },
  "resync-period": { default: "30s", help: "full re-list of claims (sources that became ready)" },
  "log-level": { env: "LOG_LEVEL", default: "info", help: "pino level" },
} as const satisfies Record<string, FlagSpec>;

export function placementUsage(): string {
  return flagsUsage(
    "placement-controller",
    "Sets volume.kubernetes.io/selected-node on claims that restore a snapshot or clone a volume of this\n" +
      "driver to the node that holds the source. One replica acts per cluster (leader election on a Lease).",
    PLACEMENT_FLAGS,
  );
}

export interface PlacementSettings {
  readonly kubeconfig: string | undefined;
  readonly driverName: string;
  readonly leaseName: string;
  readonly leaseNamespace: string | undefined;
  readonly identity: string;
  readonly leaseDurationSeconds: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  readonly resyncPeriodMs: number;
  readonly logLevel: (typeof LOG_LEVELS)[number];
}

/** Parses the flags; `undefined` means `--help` was asked for. Throws ConfigError. */
export function parsePlacementArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): PlacementSettings | undefined {
  const flags = parseCommandFlags("placement-controller", argv, PLACEMENT_FLAGS, env);
  if (flags.help) return undefined;
  const problems: string[] = [];
  const duration = (flag: "lease-duration" | "renew-deadline" | "retry-period" | "resync-period"): number => {
    try {
      const ms = parseDuration(flags[flag]);
      if (ms <= 0) problems.push(`--${flag} must be positive`);
      return ms;
    } catch (error) {
      problems.push(`--${flag}: ${errorMessage(error)}`);
      return 0;
    }
  };
  const leaseMs = duration("lease-duration");
  const renewMs = duration("renew-deadline");
  const retryMs = duration("retry-period");
  const resyncMs = duration("resync-period");
  if (leaseMs % 1000 !== 0)
    problems.push("--lease-duration must be whole seconds (a Lease counts in seconds)");
  if (renewMs >= leaseMs) problems.push("--renew-deadline must be shorter than --lease-duration");
  if (retryMs >= renewMs) problems.push("--retry-period must be shorter than --renew-deadline");
  const logLevel = flags["log-level"];
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel))
    problems.push(`--log-level: one of ${LOG_LEVELS.join(", ")}`);
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    kubeconfig: flags.kubeconfig,
    driverName: flags["driver-name"],
    leaseName: flags["lease-name"],
    leaseNamespace: flags["lease-namespace"],
    identity: flags.identity ?? hostname(),
    leaseDurationSeconds: leaseMs / 1000,
    renewDeadlineMs: renewMs,
    retryPeriodMs: retryMs,
    resyncPeriodMs: resyncMs,
    logLevel: logLevel as PlacementSettings["logLevel"],
  };
}

/** Runs until `signal` aborts (the CLI aborts it on SIGTERM/SIGINT). */
export async function runPlacementController(
  settings: PlacementSettings,
  env: NodeJS.ProcessEnv,
  signal: AbortSignal,
): Promise<void> {
  const logger = createLogger({ level: settings.logLevel, base: { component: "placement-controller" } });
  const loaded = loadKubeConfig({ kubeconfigPath: settings.kubeconfig, env });
  const kube = makeKubeClients(loaded.config);
  const namespace = settings.leaseNamespace ?? currentNamespace(loaded.config) ?? "default";
  logger.info(
    {
      server: loaded.server,
      from: loaded.origin,
      lease: `${namespace}/${settings.leaseName}`,
      identity: settings.identity,
    },
    "placement controller starting",
  );
  const controller = new PlacementController({
    kube,
    driverName: settings.driverName,
    topologyKey: `${settings.driverName}${TOPOLOGY_KEY_SUFFIX}`,
    events: new EventRecorder({
      core: kube.core,
      component: "thinpool-csi-placement",
      host: settings.identity,
      logger,
    }),
    logger,
    resyncPeriodMs: settings.resyncPeriodMs,
  });
  const elector = new LeaderElector({
    coordination: kube.coordination,
    namespace,
    name: settings.leaseName,
    identity: settings.identity,
    leaseDurationSeconds: settings.leaseDurationSeconds,
    renewDeadlineMs: settings.renewDeadlineMs,
    retryPeriodMs: settings.retryPeriodMs,
    logger,
  });
  let running: Promise<void> = Promise.resolve();
  await elector.run(signal, {
    onStartedLeading: (leading) => {
      running = controller.run(leading);
    },
    onStoppedLeading: () => undefined,
  });
  await running;
  logger.info("placement controller stopped");
}
