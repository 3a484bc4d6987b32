import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Whether the module at `moduleUrl` (its import.meta.url) is the script node was started with. */
export function isEntryPoint(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) {
    return false;
  }
  try {
    // npm's bin links are symlinks to the module.
    return realpathSync(script) === fileURLToPath(moduleUrl);
  } catch {
    return false;
  }
}
