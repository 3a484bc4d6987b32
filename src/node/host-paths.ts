import { lstat, realpath } from "node:fs/promises";
import { dirname, isAbsolute, normalize, relative, sep } from "node:path";

/**
 * Paths the CO gives (staging and target paths) must lie under the kubelet directory. A path with `..`
 * segments, a relative path, or one whose existing part resolves through a symlink to somewhere else is
 * refused: the driver runs privileged and must not be steered into mounting over host paths.
 *
 * The existing part is found with lstat, so a dangling symlink counts as existing and must resolve: the
 * hostile-input suite found a block target that was a dangling symlink out of the kubelet directory
 * accepted (the driver then created the file outside and bound the device onto it), and paths that the
 * kernel cannot walk (a symlink loop, a regular file as a directory, a name over 255 bytes, over
 * PATH_MAX) accepted and failing later as INTERNAL, after the device was activated.
 */
export async function checkPathUnder(root: string, path: string, what: string): Promise<string | undefined> {
  if (!path) return `${what} is required`;
  if (!isAbsolute(path)) return `${what} '${path}' must be an absolute path`;
  if (path.split("/").includes("..")) return `${what} '${path}' must not contain '..' segments`;
  if (path.includes("\0")) return `${what} must not contain NUL bytes`;
  const normal = normalize(path);
  if (!isInside(root, normal)) return `${what} '${path}' is outside the kubelet directory ${root}`;
  // The deepest ancestor that exists (a symlink, dangling or not, exists): it must resolve inside the root.
  let existing = normal;
  for (;;) {
    const error = await lstat(existing).then(
      () => undefined,
      (err: NodeJS.ErrnoException) => err,
    );
    if (error === undefined) break;
    if (error.code !== "ENOENT") return `${what} '${path}' cannot be used: ${error.code ?? error.message}`;
    const parent = dirname(existing);
    if (parent === existing) return undefined;
    existing = parent;
  }
  const resolved = await realpath(existing).catch((err: NodeJS.ErrnoException) => err);
  if (resolved instanceof Error)
    return `${what} '${path}' resolves through a symlink that does not resolve (${resolved.code ?? resolved.message})`;
  const rootResolved = await realpath(root).catch(() => root);
  if (resolved !== rootResolved && !isInside(rootResolved, resolved))
    return `${what} '${path}' resolves through a symlink to '${resolved}', outside ${root}`;
  return undefined;
}

function isInside(root: string, path: string): boolean {
  const rel = relative(normalize(root), path);
  return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel) && !rel.split(sep).includes("..");
}
