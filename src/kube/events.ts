/**
 * Kubernetes Events (core/v1, what `kubectl describe` shows) for any object: a Node for pool pressure, a
 * PVC for a placement decision. Like client-go's recorder:
 * - a repeat of the same event (same object, type, reason, message) bumps `count` and `lastTimestamp` of
 *   the Event already written instead of writing a new one;
 * - a per-object token bucket (burst 25, one more every 5 minutes) drops floods of distinct events;
 * - recording never fails the caller: API errors are logged and swallowed, because an Event is a report,
 *   never part of the operation it reports on.
 */
import type { CoreV1Api, CoreV1Event } from "@kubernetes/client-node";
import type { Logger } from "pino";

import { errorMessage } from "../util/errors.js";
import { MERGE_PATCH, isNotFound } from "./clients.js";

export type EventType = "Normal" | "Warning";

/** The object an Event is about. Cluster-scoped objects (Node, PV) have no namespace. */
export interface InvolvedObject {
  readonly kind: string;
  readonly name: string;
  readonly namespace?: string | undefined;
  readonly uid?: string | undefined;
  readonly apiVersion?: string | undefined;
}

export interface EventRecorderOptions {
  readonly core: CoreV1Api;
  /** `source.component` / `reportingComponent`, e.g. "thinpool-csi-placement". */
  readonly component: string;
  /** `source.host` / `reportingInstance`: the node or pod name. */
  readonly host?: string | undefined;
  readonly logger: Logger;
  /** Tests pass a clock they move. */
  readonly now?: () => Date;
}

/** Distinct events one object may get at once, and how fast the allowance refills (client-go's values). */
export const EVENT_BURST = 25;
export const EVENT_REFILL_MS = 5 * 60_000;
/** Remembered events and objects; the oldest are forgotten first (client-go keeps 4096). */
const MAX_ENTRIES = 4096;
/** Events of cluster-scoped objects go to this namespace, as client-go does. */
const CLUSTER_SCOPED_EVENT_NAMESPACE = "default";

interface WrittenEvent {
  readonly name: string;
  readonly namespace: string;
  count: number;
}

interface Bucket {
  tokens: number;
  refilledAt: number;
}

export class EventRecorder {
  private readonly written = new Map<string, WrittenEvent>();
  private readonly buckets = new Map<string, Bucket>();
  /** One write at a time per event key, so two concurrent repeats bump one Event rather than make two. */
  private readonly inFlight = new Map<string, Promise<void>>();
  private readonly now: () => Date;
  /** Stands in for the nanoseconds of client-go's event names, so two events in one millisecond differ. */
  private sequence = 0;

  constructor(private readonly options: EventRecorderOptions) {
    this.now = options.now ?? (() => new Date());
  }

  /** Records the event; resolves when it was written, merged into an earlier one, dropped, or failed. */
  recordEvent(object: InvolvedObject, type: EventType, reason: string, message: string): Promise<void> {
    const key = JSON.stringify([
      object.kind,
      object.namespace ?? "",
      object.name,
      object.uid ?? "",
      type,
      reason,
      message,
    ]);
    const previous = this.inFlight.get(key) ?? Promise.resolve();
    const next = previous.then(() => this.write(key, object, type, reason, message));
    this.inFlight.set(key, next);
    void next.then(() => {
      if (this.inFlight.get(key) === next) this.inFlight.delete(key);
    });
    return next;
  }

  private async write(
    key: string,
    object: InvolvedObject,
    type: EventType,
    reason: string,
    message: string,
  ): Promise<void> {
    const log = this.options.logger;
    const now = this.now();
    const existing = this.written.get(key);
    try {
      if (existing !== undefined) {
        try {
          await this.options.core.patchNamespacedEvent(
            {
              name: existing.name,
              namespace: existing.namespace,
              body: { count: existing.count + 1, lastTimestamp: now.toISOString() },
            },
            MERGE_PATCH,
          );
          existing.count += 1;
          remember(this.written, key, existing);
          return;
        } catch (error) {
          // Events expire (the API server keeps them an hour by default): start a new one.
          if (!isNotFound(error)) throw error;
          this.written.delete(key);
        }
      }
      if (!this.takeToken(object, now.getTime())) {
        log.debug({ object, reason }, "event dropped: too many events for this object");
        return;
      }
      const namespace = object.namespace ?? CLUSTER_SCOPED_EVENT_NAMESPACE;
      const created = await this.options.core.createNamespacedEvent({
        namespace,
        body: this.newEvent(object, namespace, type, reason, message, now),
      });
      remember(this.written, key, { name: created.metadata?.name ?? "", namespace, count: 1 });
    } catch (error) {
      log.warn({ object, reason, err: errorMessage(error) }, "could not record a Kubernetes event");
    }
  }

  private newEvent(
    object: InvolvedObject,
    namespace: string,
    type: EventType,
    reason: string,
    message: string,
    now: Date,
  ): CoreV1Event {
    const { component, host } = this.options;
    return {
      metadata: {
        // client-go's naming: the object's name and the time in hex nanoseconds.
        name: `${object.name}.${(BigInt(now.getTime()) * 1_000_000n + BigInt(this.sequence++ % 1_000_000)).toString(16)}`,
        namespace,
      },
      involvedObject: {
        kind: object.kind,
        name: object.name,
        ...(object.namespace !== undefined ? { namespace: object.namespace } : {}),
        ...(object.uid !== undefined ? { uid: object.uid } : {}),
        ...(object.apiVersion !== undefined ? { apiVersion: object.apiVersion } : {}),
      },
      type,
      reason,
      // The API server refuses messages over 1 KiB.
      message: message.length > 1024 ? `${message.slice(0, 1021)}...` : message,
      source: { component, ...(host !== undefined ? { host } : {}) },
      reportingComponent: component,
      reportingInstance: host ?? component,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
  }

  private takeToken(object: InvolvedObject, nowMs: number): boolean {
    const key = JSON.stringify([object.kind, object.namespace ?? "", object.name]);
    const bucket = this.buckets.get(key) ?? { tokens: EVENT_BURST, refilledAt: nowMs };
    const refills = Math.floor((nowMs - bucket.refilledAt) / EVENT_REFILL_MS);
    if (refills > 0) {
      bucket.tokens = Math.min(EVENT_BURST, bucket.tokens + refills);
      bucket.refilledAt += refills * EVENT_REFILL_MS;
    }
    const allowed = bucket.tokens > 0;
    if (allowed) bucket.tokens -= 1;
    remember(this.buckets, key, bucket);
    return allowed;
  }
}

/** Map insertion order as an LRU: re-insert on use, drop the oldest past the cap. */
function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > MAX_ENTRIES) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
}
