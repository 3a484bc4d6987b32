import path from "node:path";

/** Linux: sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
export const MAX_UNIX_SOCKET_PATH_BYTES = 107;

export class EndpointError extends Error {
  override readonly name = "EndpointError";
}

/**
 * The socket path of a CSI endpoint. Accepts the forms COs and sidecars use: `unix:///csi/csi.sock`,
 * `unix:/csi/csi.sock` and a plain `/csi/csi.sock`. Only unix sockets: CSI over TCP would expose
 * mount and format operations to the network.
 */
export function parseUnixEndpoint(endpoint: string): string {
  let socketPath: string;
  if (endpoint.startsWith("unix://")) {
    socketPath = endpoint.slice("unix://".length);
    if (!socketPath.startsWith("/")) {
      throw new EndpointError(
        `'${endpoint}' names a host ('${socketPath.split("/")[0]}'), not a path: write unix:///absolute/path (three slashes)`,
      );
    }
  } else if (endpoint.startsWith("unix:")) {
    socketPath = endpoint.slice("unix:".length);
  } else if (/^[a-z][a-z0-9+.-]*:/i.test(endpoint)) {
    throw new EndpointError(`'${endpoint}' is not a unix socket endpoint: only unix:///path is supported`);
  } else {
    socketPath = endpoint;
  }
  if (!path.isAbsolute(socketPath)) {
    throw new EndpointError(`'${endpoint}' must name an absolute socket path, e.g. unix:///csi/csi.sock`);
  }
  socketPath = path.normalize(socketPath);
  if (socketPath.endsWith("/")) {
    throw new EndpointError(`'${endpoint}' names a directory, not a socket file`);
  }
  const bytes = Buffer.byteLength(socketPath);
  if (bytes > MAX_UNIX_SOCKET_PATH_BYTES) {
    throw new EndpointError(
      `socket path '${socketPath}' is ${bytes} bytes; unix sockets allow at most ${MAX_UNIX_SOCKET_PATH_BYTES}`,
    );
  }
  return socketPath;
}
