#!/usr/bin/env node
/**
 * vhostd: the daemon entry point. Parses flags, loads the configuration, starts the control socket and the Daemon;
 * no logic here. SIGHUP (or `vhostctl reload`) re-reads the configuration, SIGUSR2 logs the counters.
 *
 *   vhostd [-v] [-f FILE]     run in the foreground (without -f: the embedded default configuration)
 *   vhostd -n [-f FILE]       check the configuration and exit 0 (valid) or 1 (invalid)
 */
import { parseArgs } from 'node:util';
import { loadConfigFile } from '../config/load.js';
import { defaultConfig, DEFAULT_CONFIG_NAME } from '../config/default.js';
import { controlSocketPath, type Config, type LogLevel } from '../config/model.js';
import { LOG_LEVELS } from '../config/parser.js';
import { ControlHandlers } from '../control/handlers.js';
import { ControlServer } from '../control/server.js';
import { Daemon } from '../daemon.js';
import { loadNative } from '../native/binding.js';
import { startMetrics, type MetricsServer } from '../metrics/exporter.js';
import { createLogger } from '../util/log.js';

const usage = `usage: vhostd [-nv] [-f file]
  -f file   configuration file (default: the embedded default configuration)
  -n        check the configuration and exit
  -v        verbose logging (debug; -vv for trace), if more verbose than the configured log level
  -h        this help`;

async function main(): Promise<number> {
  let values: { f?: string; n?: boolean; v?: boolean[]; h?: boolean };
  try {
    ({ values } = parseArgs({
      options: {
        f: { type: 'string', short: 'f' },
        n: { type: 'boolean', short: 'n' },
        v: { type: 'boolean', short: 'v', multiple: true },
        h: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`vhostd: ${(err as Error).message}\n${usage}\n`);
    return 1;
  }
  if (values.h) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  let config: Config;
  try {
    config = values.f ? loadConfigFile(values.f) : defaultConfig();
  } catch (err) {
    process.stderr.write(`vhostd: ${(err as Error).message}\n`);
    return 1;
  }
  if (values.n) {
    process.stdout.write(`${values.f ?? DEFAULT_CONFIG_NAME}: configuration OK\n`);
    return 0;
  }
  const verbosity = values.v?.length ?? 0;
  const log = createLogger({ level: moreVerbose(config.logLevel ?? 'info', verbosity >= 2 ? 'trace' : verbosity === 1 ? 'debug' : 'info') });
  let daemon: Daemon;
  let control: ControlServer;
  let handlers: ControlHandlers;
  try {
    daemon = new Daemon(config, loadNative(), log);
    // The control socket first: if another vhostd answers on it, stop before touching its vhost-user sockets.
    const cwd = process.cwd();
    const configFile = values.f;
    handlers = new ControlHandlers({
      daemon,
      log,
      loadConfig: () => (configFile !== undefined ? loadConfigFile(configFile) : defaultConfig(cwd)),
      afterReload: (cfg) => control.setOwner(cfg.socketOwner),
    });
    control = new ControlServer(controlSocketPath(config), (req) => handlers.handle(req), log, config.socketOwner);
    await control.listen();
    try {
      await daemon.openDisks();
      daemon.start();
    } catch (err) {
      control.close();
      throw err;
    }
  } catch (err) {
    log.fatal({ err }, 'vhostd failed to start');
    return 1;
  }
  let metrics: MetricsServer | null = null;
  if (config.metricsListen) {
    try {
      metrics = await startMetrics(daemon, config.metricsListen, log);
    } catch (err) {
      log.fatal({ reason: (err as Error).message }, 'vhostd failed to start');
      control.close();
      await daemon.stop();
      return 1;
    }
  }
  for (const q of daemon.qemuArgs({ tcg: false })) {
    log.info({ vm: q.vm, socket: q.socket, qemu: q.args }, 'attach a QEMU guest with these arguments (add vectors=0 to -device under TCG)');
  }
  const logStats = (): void => {
    for (const s of daemon.stats()) log.info({ stats: s }, 'port counters');
  };
  process.on('SIGUSR2', logStats); // SIGUSR1 is Node's inspector signal
  // SIGHUP re-reads the configuration, as `vhostctl reload` does (the result goes to the log).
  process.on('SIGHUP', () => {
    // The handler logs the outcome, a refusal included.
    Promise.resolve(handlers.handle({ cmd: 'reload' })).catch(() => undefined);
  });
  const shutdown = (signal: string): void => {
    log.info({ signal }, 'shutting down');
    logStats();
    const exit = (): void => {
      log.flush();
      process.exit(0);
    };
    control.close();
    void metrics?.close();
    daemon.stop().then(exit, (err: unknown) => {
      log.error({ err }, 'shutdown failed');
      exit();
    });
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  return -1; // keep running
}

/** The more verbose of two levels: `-v` raises the configured level, never lowers it. */
function moreVerbose(a: LogLevel, b: LogLevel): LogLevel {
  return LOG_LEVELS.indexOf(a) >= LOG_LEVELS.indexOf(b) ? a : b;
}

void main().then((rc) => {
  if (rc >= 0) process.exitCode = rc;
});
