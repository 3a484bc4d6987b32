/**
 * Named points where the process can be made to kill itself, to prove that every step of every
 * operation survives a crash. Off unless THINPOOL_CSI_CRASH_AT names a point; the check is one set
 * lookup, so leaving the calls in the product costs nothing.
 *
 * THINPOOL_CSI_CRASH_AT=<point>[,<point>...]  (e.g. "snapshot.origin-suspended")
 */
export const CRASH_POINTS = [
  "create.intent-committed",
  "create.kernel-created",
  "create.txid-advanced",
  "spare.intent-committed",
  "spare.kernel-created",
  "snapshot.intent-committed",
  "snapshot.origin-suspended",
  "snapshot.kernel-created",
  "snapshot.origin-resumed",
  "delete.intent-committed",
  "delete.deactivated",
  "delete.kernel-deleted",
  "activate.intent-committed",
  "activate.kernel-created",
  "deactivate.intent-committed",
  "resize.intent-committed",
  "resize.table-reloaded",
  "stage.activated",
  "stage.formatted",
  "stage.mounted",
  "unstage.unmounted",
  "expand.device-grown",
] as const;

export type CrashPointName = (typeof CRASH_POINTS)[number];

const armed = new Set(
  (process.env.THINPOOL_CSI_CRASH_AT ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean),
);

export function crashPoint(point: CrashPointName): void {
  if (armed.size > 0 && armed.has(point)) {
    process.stderr.write(`thinpool-csi: crash point '${point}' reached, killing process (SIGKILL)\n`);
    process.kill(process.pid, "SIGKILL");
  }
}
