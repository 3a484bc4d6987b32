import { setTimeout as sleep } from "node:timers/promises";

export interface RetryPolicy {
  /** Give up after this many attempts (including the first). */
  attempts?: number;
  /** Or give up once this much time has passed since the first attempt. */
  deadlineMs?: number;
  initialDelayMs: number;
  maxDelayMs: number;
  /** Which failures are worth another attempt; others are thrown at once. */
  retryable: (err: unknown) => boolean;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/** Runs `op` until it succeeds, a non-retryable error occurs, or the attempts/deadline run out. */
export async function retry<T>(op: () => Promise<T>, policy: RetryPolicy): Promise<T> {
  const started = Date.now();
  let delay = policy.initialDelayMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      const outOfAttempts = policy.attempts !== undefined && attempt >= policy.attempts;
      const outOfTime = policy.deadlineMs !== undefined && Date.now() - started + delay > policy.deadlineMs;
      if (!policy.retryable(err) || outOfAttempts || outOfTime) throw err;
      policy.onRetry?.(err, attempt, delay);
      await sleep(delay);
      delay = Math.min(delay * 2, policy.maxDelayMs);
    }
  }
}
