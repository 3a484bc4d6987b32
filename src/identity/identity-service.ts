/**
 * The CSI Identity service: who the plugin is, what it can do, and whether it is ready.
 */
import type { Logger } from "pino";

import type { IdentityHandlers, IdentityResponse } from "../csi/types.js";
import { errorMessage } from "../util/errors.js";

export interface Readiness {
  readonly ready: boolean;
  /** Why not ready (logged when readiness changes), e.g. "start-up reconciliation running". */
  readonly reason?: string;
}

/**
 * Implemented by the engine: ready once start-up reconciliation is done and the pool is healthy; not
 * ready again when the pool disappears or fails. Called on every Probe (kubelet's liveness probe calls
 * Probe every few seconds), so it must be cheap and must not block.
 */
export interface ReadinessProvider {
  isReady(): Readiness;
}

export interface IdentityServiceOptions {
  /** Validated at configuration time (CSI: <= 63 characters, domain-name notation). */
  readonly driverName: string;
  /** vendor_version: the package version. */
  readonly version: string;
  readonly readiness: ReadinessProvider;
  readonly logger: Logger;
}

/**
 * The same on every node, as the spec requires of all instances of one version. Controller EXPAND_VOLUME
 * is deliberately not advertised (see the controller's capabilities): expansion is node-only, so the
 * resizer sidecar uses its trivial mode.
 */
export const PLUGIN_CAPABILITIES: IdentityResponse<"GetPluginCapabilities">["capabilities"] = [
  { service: { type: "CONTROLLER_SERVICE" } },
  { service: { type: "VOLUME_ACCESSIBILITY_CONSTRAINTS" } },
  // One enum value per PluginCapability message: ONLINE and OFFLINE are two entries. Both as issue #3
  // asks; note that the spec's text ties OFFLINE to the controller EXPAND_VOLUME capability, which this
  // driver leaves out on purpose (node-only expansion).
  { volume_expansion: { type: "ONLINE" } },
  { volume_expansion: { type: "OFFLINE" } },
];

export function createIdentityHandlers(options: IdentityServiceOptions): IdentityHandlers {
  let lastReadiness: Readiness | undefined;

  const currentReadiness = (): Readiness => {
    try {
      return options.readiness.isReady();
    } catch (error) {
      return { ready: false, reason: `readiness check failed: ${errorMessage(error)}` };
    }
  };

  return {
    GetPluginInfo: async () => ({
      name: options.driverName,
      vendor_version: options.version,
    }),

    GetPluginCapabilities: async () => ({ capabilities: PLUGIN_CAPABILITIES }),

    Probe: async () => {
      const readiness = currentReadiness();
      // Logged on change only: Probe is called every few seconds.
      if (
        lastReadiness === undefined ||
        lastReadiness.ready !== readiness.ready ||
        lastReadiness.reason !== readiness.reason
      ) {
        if (readiness.ready) {
          options.logger.info("driver is ready");
        } else {
          options.logger.info({ reason: readiness.reason ?? "not given" }, "driver is not ready");
        }
        lastReadiness = readiness;
      }
      return { ready: { value: readiness.ready } };
    },
  };
}
