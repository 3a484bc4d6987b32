import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE_NAME = "thinpool-csi";

/**
 * The directory holding this project's package.json. Found by walking up from this file, because the
 * compiled code runs from dist/src/... in the repository and from wherever the image copies it.
 */
export function findPackageRoot(startFile: string = fileURLToPath(import.meta.url)): string {
  let dir = path.dirname(startFile);
  for (;;) {
    const candidate = path.join(dir, "package.json");
    if (existsSync(candidate)) {
      const parsed: unknown = JSON.parse(readFileSync(candidate, "utf8"));
      if (
        typeof parsed === "object" &&
        parsed !== null &&
        (parsed as { name?: unknown }).name === PACKAGE_NAME
      ) {
        return dir;
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error(`cannot find the package.json of ${PACKAGE_NAME} above ${startFile}`);
    }
    dir = parent;
  }
}

/** The `version` of package.json: reported as GetPluginInfo.vendor_version. */
export function readPackageVersion(root: string = findPackageRoot()): string {
  const parsed: unknown = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
  const version =
    typeof parsed === "object" && parsed !== null ? (parsed as { version?: unknown }).version : undefined;
  if (typeof version !== "string" || version === "") {
    throw new Error(`${path.join(root, "package.json")} has no version`);
  }
  return version;
}
