/**
 * Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules, so that one replica of a
 * cluster-wide controller acts at a time:
 * - a Lease is taken when it has no holder, or when its record has not changed for `leaseDurationSeconds`
 *   as seen by THIS process's clock (the time it last saw the record change), never by comparing another
 *   node's timestamps with ours, so clock skew between nodes does not matter;
 * - the holder renews every `retryPeriod`; one that could not renew for `renewDeadline` stops leading (it
 *   must stop acting before another replica may take over at `leaseDuration`);
 * - every write is an update with the resourceVersion read, so two candidates cannot both win;
 * - on a clean stop the holder releases the Lease (empty holder), so a successor starts at once.
 */
import type { CoordinationV1Api, V1Lease } from "@kubernetes/client-node";
import type { Logger } from "pino";

import { errorMessage } from "../util/errors.js";
import { isConflict, isNotFound } from "./clients.js";

export interface LeaderElectionOptions {
  readonly coordination: CoordinationV1Api;
  readonly namespace: string;
  readonly name: string;
  /** This candidate's name in the Lease (the pod name). */
  readonly identity: string;
  readonly leaseDurationSeconds: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  readonly logger: Logger;
  /** Tests pass a clock they move. */
  readonly now?: () => number;
}

export interface LeaderCallbacks {
  /** Called when this candidate becomes the leader; `signal` aborts when it stops leading. */
  readonly onStartedLeading: (signal: AbortSignal) => void;
  readonly onStoppedLeading: () => void;
}

export class LeaderElector {
  private observedRecord: string | undefined;
  private observedAtMs = 0;
  private lastRenewMs: number | undefined;
  private readonly now: () => number;

  constructor(private readonly options: LeaderElectionOptions) {
    this.now = options.now ?? Date.now;
  }

  /**
   * One round: takes the Lease if free or expired, renews it if held. Returns whether this candidate
   * leads now. API errors count as "not renewed" (the caller's renew deadline decides what follows).
   */
  async tryAcquireOrRenew(): Promise<boolean> {
    const { coordination, namespace, name, identity, leaseDurationSeconds } = this.options;
    const nowMs = this.now();
    const renewTime = new Date(nowMs);
    let lease: V1Lease;
    try {
      lease = await coordination.readNamespacedLease({ name, namespace });
    } catch (error) {
      if (!isNotFound(error)) return this.failed(error);
      try {
        await coordination.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace },
            spec: {
              holderIdentity: identity,
              leaseDurationSeconds,
              acquireTime: renewTime,
              renewTime,
              leaseTransitions: 0,
            },
          },
        });
        return this.won(nowMs, true);
      } catch (createError) {
        return this.failed(createError);
      }
    }
    const spec = lease.spec ?? {};
    const record = JSON.stringify([
      spec.holderIdentity ?? "",
      spec.renewTime?.toString() ?? "",
      spec.leaseTransitions ?? 0,
    ]);
    if (record !== this.observedRecord) {
      this.observedRecord = record;
      this.observedAtMs = nowMs;
    }
    const holder = spec.holderIdentity ?? "";
    const heldByUs = holder === identity;
    const duration = (spec.leaseDurationSeconds ?? leaseDurationSeconds) * 1000;
    if (!heldByUs && holder !== "" && this.observedAtMs + duration > nowMs) {
      this.lastRenewMs = undefined;
      return false;
    }
    try {
      await coordination.replaceNamespacedLease({
        name,
        namespace,
        body: {
          metadata: { ...lease.metadata, name, namespace },
          spec: {
            holderIdentity: identity,
            leaseDurationSeconds,
            acquireTime: heldByUs && spec.acquireTime !== undefined ? spec.acquireTime : renewTime,
            renewTime,
            leaseTransitions: (spec.leaseTransitions ?? 0) + (heldByUs ? 0 : 1),
          },
        },
      });
      return this.won(nowMs, !heldByUs);
    } catch (error) {
      return this.failed(error);
    }
  }

  /** Gives the Lease up if this candidate holds it (best effort: a failure only delays the successor). */
  async release(): Promise<void> {
    if (this.lastRenewMs === undefined) return;
    this.lastRenewMs = undefined;
    const { coordination, namespace, name, identity } = this.options;
    try {
      const lease = await coordination.readNamespacedLease({ name, namespace });
      if (lease.spec?.holderIdentity !== identity) return;
      await coordination.replaceNamespacedLease({
        name,
        namespace,
        body: {
          ...lease,
          spec: {
            ...lease.spec,
            holderIdentity: "",
            leaseDurationSeconds: 1,
            renewTime: new Date(this.now()),
          },
        },
      });
    } catch (error) {
      this.options.logger.warn({ err: errorMessage(error), lease: name }, "could not release the lease");
    }
  }

  /**
   * Runs the election until `signal` aborts: tries every retry period, calls `onStartedLeading` when it
   * wins and `onStoppedLeading` when it could not renew within the renew deadline, or another holder
   * appeared, or at the end (after which the Lease is released).
   */
  async run(signal: AbortSignal, callbacks: LeaderCallbacks): Promise<void> {
    const { retryPeriodMs, renewDeadlineMs, logger, name, identity } = this.options;
    let leading: AbortController | undefined;
    const stopLeading = (): void => {
      if (leading === undefined) return;
      leading.abort();
      leading = undefined;
      callbacks.onStoppedLeading();
    };
    while (!signal.aborted) {
      const renewed = await this.tryAcquireOrRenew();
      const lastRenew = this.lastRenewMs;
      // A failed renewal (API error) is tolerated until the renew deadline, well before the Lease expires.
      const leads =
        renewed ||
        (leading !== undefined && lastRenew !== undefined && this.now() - lastRenew < renewDeadlineMs);
      if (leads && leading === undefined) {
        logger.info({ lease: name, identity }, "became the leader");
        leading = new AbortController();
        callbacks.onStartedLeading(leading.signal);
      } else if (!leads && leading !== undefined) {
        logger.warn({ lease: name, identity }, "lost the leadership");
        this.lastRenewMs = undefined;
        stopLeading();
      }
      await sleep(retryPeriodMs, signal);
    }
    stopLeading();
    await this.release();
  }

  private won(nowMs: number, acquired: boolean): boolean {
    if (acquired) this.options.logger.debug({ lease: this.options.name }, "lease acquired");
    this.lastRenewMs = nowMs;
    this.observedRecord = undefined;
    return true;
  }

  /** Not renewed this round; `lastRenewMs` stays, for the renew deadline. */
  private failed(error: unknown): boolean {
    if (isConflict(error)) {
      // Another candidate wrote the Lease between our read and our write: it holds it now.
      this.lastRenewMs = undefined;
    } else {
      this.options.logger.warn({ err: errorMessage(error), lease: this.options.name }, "lease update failed");
    }
    return false;
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}
