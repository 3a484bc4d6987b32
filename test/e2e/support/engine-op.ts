/**
 * Runs one engine operation in its own process, so a test can have it killed at a named crash point
 * (THINPOOL_CSI_CRASH_AT) and then check what start-up reconciliation makes of the wreck.
 *
 *   node dist/test/e2e/support/engine-op.js <state.db> <data-dev> <meta-dev> <op> <args...>
 *   ops: create <name> <bytes> | snapshot <name> <source> | delete <name> | resize <name> <bytes> | activate <name>
 */
import { StateStore } from "../../../src/state/store.js";
import { ThinPoolEngine } from "../../../src/thinpool/engine.js";

const [statePath, data, metadata, op, a, b] = process.argv.slice(2);
if (!statePath || !data || !metadata || !op || !a) {
  process.stderr.write("usage: engine-op <state.db> <data-dev> <meta-dev> <op> <args...>\n");
  process.exit(2);
}
const logger = {
  info: () => undefined,
  warn: () => undefined,
  error: (f: object, m: string) => process.stderr.write(`${m} ${JSON.stringify(f)}\n`),
};
const engine = await ThinPoolEngine.open({
  store: StateStore.open(statePath),
  logger,
  pools: [{ name: "e2e", source: { type: "devices", data, metadata } }],
});
switch (op) {
  case "create":
    await engine.createVolume({ name: a, sizeBytes: Number(b) });
    break;
  case "snapshot":
    await engine.createSnapshot({ name: a, source: b as string, kind: "snapshot" });
    break;
  case "delete":
    await engine.deleteDevice(a);
    break;
  case "resize":
    await engine.resize(a, Number(b));
    break;
  case "activate":
    await engine.activate(a);
    break;
  default:
    process.stderr.write(`unknown op ${op}\n`);
    process.exit(2);
}
engine.close();
process.stdout.write("done\n");
