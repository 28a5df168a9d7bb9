/**
 * The Prometheus exporter (`metrics listen ADDRESS:PORT`): GET /metrics answers the text exposition format built
 * at scrape time from the daemon's current devices; any other path is 404. Off unless configured.
 */
import http from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from '../util/log.js';
import { buildRegistry } from './registry.js';
import type { MetricsSource } from './source.js';

export interface MetricsServer {
  /** The bound address (port resolved when 0 was asked for). */
  readonly host: string;
  readonly port: number;
  readonly registry: Registry;
  close(): Promise<void>;
}

/** "127.0.0.1:9100", "[::1]:9100". */
export function formatListen(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

const BIND_ERRORS: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied',
  EADDRNOTAVAIL: 'address not available on this host',
};

export function startMetrics(daemon: MetricsSource, listen: { host: string; port: number }, log: Logger, opts: { processMetrics?: boolean } = {}): Promise<MetricsServer> {
  const registry = buildRegistry(daemon, opts);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: try /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: unknown) => {
        log.error({ reason: (err as Error).message }, 'metrics scrape failed');
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`scrape failed: ${(err as Error).message}\n`);
      },
    );
  });
  const where = formatListen(listen.host, listen.port);
  return new Promise<MetricsServer>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const why = (err.code && BIND_ERRORS[err.code]) ?? err.message;
      reject(new Error(`metrics listen ${where}: ${why}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(listen.port, listen.host, () => {
      server.off('error', onError);
      server.on('error', (err) => log.error({ reason: err.message }, 'metrics server error'));
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : listen.port;
      log.info({ metrics: `http://${formatListen(listen.host, port)}/metrics` }, 'metrics exporter listening');
      resolve({
        host: listen.host,
        port,
        registry,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections(); // scrapers keep connections alive
          }),
      });
    });
  });
}
