// Locating the repository root from compiled code.
//
// Everything runs from dist/ (dist/test/..., dist/scripts/...), at different depths, and the VM mounts the
// host root so the same absolute path is valid inside the guest. Walking up to the package.json that names
// this project is robust to file moves and to running from a clone in another directory.

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE_NAME = "thinpool-csi";

function findRepoRoot(start: string): string {
  let dir = start;
  for (;;) {
    const candidate = path.join(dir, "package.json");
    if (existsSync(candidate)) {
      try {
        const parsed: unknown = JSON.parse(readFileSync(candidate, "utf8"));
        if (
          typeof parsed === "object" &&
          parsed !== null &&
          "name" in parsed &&
          parsed.name === PACKAGE_NAME
        ) {
          return dir;
        }
      } catch {
        // An unreadable or invalid package.json is not ours; keep walking up.
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error(`cannot find the ${PACKAGE_NAME} repository root above ${start}`);
    }
    dir = parent;
  }
}

/** Absolute path of the repository root (the directory holding this project's package.json). */
export const repoRoot: string = findRepoRoot(path.dirname(fileURLToPath(import.meta.url)));

/** Absolute path inside the repository. */
export function repoPath(...segments: string[]): string {
  return path.join(repoRoot, ...segments);
}
