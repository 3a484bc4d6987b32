import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root: the nearest directory above this module whose package.json is thinpool-csi's. */
export function repoRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg)) {
      const parsed: unknown = JSON.parse(readFileSync(pkg, "utf8"));
      if (
        typeof parsed === "object" &&
        parsed !== null &&
        (parsed as { name?: unknown }).name === "thinpool-csi"
      )
        return dir;
    }
    if (dirname(dir) === dir) throw new Error(`no thinpool-csi package.json above ${from}`);
  }
}

export const CHART_DIR = (): string => join(repoRoot(), "deploy", "helm", "thinpool-csi");
export const MANIFESTS_DIR = (): string => join(repoRoot(), "deploy", "manifests");
