import { realpath } from "node:fs/promises";
import { dirname, isAbsolute, normalize, relative, sep } from "node:path";

/**
 * Paths the CO gives (staging and target paths) must lie under the kubelet directory. A path with `..`
 * segments, a relative path, or one whose existing part resolves through a symlink to somewhere else is
 * refused: the driver runs privileged and must not be steered into mounting over host paths.
 */
export async function checkPathUnder(root: string, path: string, what: string): Promise<string | undefined> {
  if (!path) return `${what} is required`;
  if (!isAbsolute(path)) return `${what} '${path}' must be an absolute path`;
  if (path.split("/").includes("..")) return `${what} '${path}' must not contain '..' segments`;
  if (path.includes("\0")) return `${what} must not contain NUL bytes`;
  const normal = normalize(path);
  if (!isInside(root, normal)) return `${what} '${path}' is outside the kubelet directory ${root}`;
  // Resolve the deepest existing ancestor: a symlink anywhere in it must still land inside the root.
  let existing = normal;
  for (;;) {
    const resolved = await realpath(existing).catch(() => undefined);
    if (resolved !== undefined) {
      const rootResolved = await realpath(root).catch(() => root);
      if (resolved !== rootResolved && !isInside(rootResolved, resolved))
        return `${what} '${path}' resolves through a symlink to '${resolved}', outside ${root}`;
      return undefined;
    }
    const parent = dirname(existing);
    if (parent === existing) return undefined;
    existing = parent;
  }
}

function isInside(root: string, path: string): boolean {
  const rel = relative(normalize(root), path);
  return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel) && !rel.split(sep).includes("..");
}
