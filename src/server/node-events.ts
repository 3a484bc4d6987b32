/**
 * Kubernetes Events on this node's Node object (what `kubectl describe node` shows), for pool pressure.
 * Outside a cluster (no service account, no kubeconfig) there is nowhere to send them: the caller then
 * only logs.
 */
import type { Logger } from "pino";

import type { EventType } from "../kube/index.js";
import { KubeConfigError, locateKubeConfig, type KubeConfigSource } from "../kube/locate.js";
import { errorMessage } from "../util/errors.js";
import { pressureNotice, type PressureChange } from "./pool-monitor.js";

export const EVENT_COMPONENT = "thinpool-csi";

export interface NodeEvents {
  /** Records an Event on the Node; never throws (the recorder logs API failures). */
  record(type: EventType, reason: string, message: string): Promise<void>;
}

/**
 * Events on Node `node`, or undefined (with one info line saying why) when no API server is configured.
 * The Event's involvedObject uid is the node name, as kubelet writes it and `kubectl describe node` finds it.
 * @kubernetes/client-node is loaded at the first Event, not at start-up: it adds ~60 MB of resident memory
 * (and seconds of start-up in the emulated test VM) to a driver that most of the time never sends one.
 */
export function nodeEventsFor(
  node: string,
  source: KubeConfigSource,
  logger: Logger,
): NodeEvents | undefined {
  let location;
  try {
    location = locateKubeConfig(source);
  } catch (error) {
    if (!(error instanceof KubeConfigError)) throw error;
    logger.info(
      { reason: error.message },
      "no Kubernetes API: pool pressure is logged only, not raised as Node Events",
    );
    return undefined;
  }
  logger.info(location, "pool pressure is raised as Events on the Node");
  const object = { kind: "Node", name: node, uid: node, apiVersion: "v1" };
  let recorder: Promise<NodeEvents | undefined> | undefined;
  const load = async (): Promise<NodeEvents | undefined> => {
    try {
      // Inside the try: a failed import must not become an unhandled rejection in the pool monitor.
      const kube = await import("../kube/index.js");
      const loaded = kube.loadKubeConfig(source);
      logger.info(
        { api: loaded.server, from: loaded.origin },
        "Kubernetes API client loaded for Node Events",
      );
      const events = new kube.EventRecorder({
        core: kube.makeKubeClients(loaded.config).core,
        component: EVENT_COMPONENT,
        host: node,
        logger,
      });
      return { record: (type, reason, message) => events.recordEvent(object, type, reason, message) };
    } catch (error) {
      logger.error({ err: errorMessage(error) }, "cannot raise Node Events (pool pressure is logged only)");
      return undefined;
    }
  };
  return {
    record: async (type, reason, message) => {
      recorder ??= load();
      await (await recorder)?.record(type, reason, message);
    },
  };
}

/** Logs a pool pressure level change (warn going up, info coming back) and raises it as a Node Event. */
export function reportPressureChange(
  change: PressureChange,
  logger: Pick<Logger, "warn" | "info">,
  events: NodeEvents | undefined,
): Promise<void> {
  const notice = pressureNotice(change);
  const fields = {
    pool: change.pool,
    resource: change.resource,
    pressure: change.to,
    previous_pressure: change.from,
    used_percent: Math.round(change.usedPercent * 10) / 10,
    reason: notice.reason,
  };
  if (notice.type === "Warning") logger.warn(fields, notice.message);
  else logger.info(fields, notice.message);
  return events?.record(notice.type, notice.reason, notice.message) ?? Promise.resolve();
}
