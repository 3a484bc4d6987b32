/**
 * A small read-only HTTP endpoint: GET routes answering with a computed body. Serves the metrics (on a TCP
 * address) and the admin status (on a unix socket in the state directory, so it is not on the network).
 */
import { chmod } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";

import { errorMessage } from "../util/errors.js";
import { prepareSocketPath } from "./server.js";

export interface HttpBody {
  readonly contentType: string;
  readonly body: string;
}

export type HttpRoutes = Readonly<Record<string, () => Promise<HttpBody>>>;

export type HttpListenAddress =
  | { readonly host: string | undefined; readonly port: number }
  | { readonly socketPath: string; readonly socketMode: number };

export interface HttpEndpoint {
  /** "host:port" or the socket path. */
  readonly address: string;
  close(): Promise<void>;
}

export async function serveHttp(
  listen: HttpListenAddress,
  routes: HttpRoutes,
  logger: Logger,
): Promise<HttpEndpoint> {
  const server = http.createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("only GET\n");
      return;
    }
    if (route === undefined) {
      response
        .writeHead(404, { "content-type": "text/plain" })
        .end(`not found; try ${Object.keys(routes).join(", ")}\n`);
      return;
    }
    route().then(
      ({ contentType, body }) => {
        response.writeHead(200, { "content-type": contentType });
        response.end(request.method === "HEAD" ? undefined : body);
      },
      (error: unknown) => {
        logger.warn({ err: error, path }, "HTTP endpoint could not answer");
        response.writeHead(500, { "content-type": "text/plain" }).end(`${errorMessage(error)}\n`);
      },
    );
  });
  // A scrape or status call never needs a long-lived connection; do not let one delay shutdown.
  server.keepAliveTimeout = 5000;
  if ("socketPath" in listen) await prepareSocketPath(listen.socketPath, logger);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    const onListening = (): void => {
      server.off("error", reject);
      resolve();
    };
    if ("socketPath" in listen) server.listen(listen.socketPath, onListening);
    else server.listen(listen.port, listen.host, onListening);
  });
  server.on("error", (error) => logger.error({ err: error }, "HTTP endpoint failed"));
  let address: string;
  if ("socketPath" in listen) {
    await chmod(listen.socketPath, listen.socketMode);
    address = listen.socketPath;
  } else {
    const info = server.address() as AddressInfo;
    address = info.family === "IPv6" ? `[${info.address}]:${info.port}` : `${info.address}:${info.port}`;
  }
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
