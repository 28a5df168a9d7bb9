/**
 * Control command handlers: one function per request, reading or changing the running Daemon. Errors an operator
 * can act on are ControlErrors (or configuration errors, whose `file:line:col: ...` message is passed through);
 * the server turns any throw into `{"ok":false,"error":message}` and keeps serving.
 */
import type { Config } from '../config/model.js';
import { canonicalMac, LOG_LEVELS } from '../config/parser.js';
import { qemuArgsForVm } from '../config/qemu-args.js';
import type { Daemon } from '../daemon.js';
import { setLogLevel, type Logger } from '../util/log.js';
import {
  ControlError,
  type ControlRequest,
  type LogLevelResult,
  type QemuArgsResult,
  type ReloadReport,
  type SwitchEditResult,
} from './protocol.js';
import { statusView, switchView, unknownSwitch } from './views.js';

/** What the handlers need from vhostd's entry point. */
export interface ControlContext {
  daemon: Daemon;
  /** The root logger: `log-level` changes it and every child (device) logger. */
  log: Logger;
  /** Re-read the configuration (the -f file, or the embedded default); throws ConfigError on a bad one. */
  loadConfig(): Config;
  /** Called after a successful reload (e.g. to re-apply the control socket's owner). */
  afterReload?(cfg: Config): void;
}

/** Dispatches a checked request to its handler; returns the result (or a promise of it). */
export class ControlHandlers {
  constructor(private readonly ctx: ControlContext) {}

  handle(req: ControlRequest): unknown {
    const d = this.ctx.daemon;
    switch (req.cmd) {
      case 'status':
        return statusView(d);
      case 'show-switch':
        return switchView(d, req.switch);
      case 'switch-flush':
        return this.flush(req.switch);
      case 'switch-static':
        return this.addStatic(req.switch, req.mac, req.port);
      case 'switch-deladdr':
        return this.delAddr(req.switch, req.mac);
      case 'qemu-args':
        return this.qemuArgs(req.vm, req.tcg ?? false, req.memory);
      case 'reload':
        return this.reload(); // Daemon.reload() serialises concurrent reloads
      case 'log-level':
        return this.logLevel(req.level);
    }
  }

  private sw(name: string) {
    const sw = this.ctx.daemon.switches.get(name);
    if (!sw) throw unknownSwitch(this.ctx.daemon, name);
    return sw;
  }

  private flush(name: string): SwitchEditResult {
    const sw = this.sw(name);
    const before = sw.macTable.size - sw.macTable.staticCount;
    sw.flushDynamic();
    return { switch: name, flushed: before };
  }

  private mac(text: string): string {
    const mac = canonicalMac(text);
    if (mac === undefined) throw new ControlError(`expected a MAC address like fe:e1:bb:f1:c8:01, got ${JSON.stringify(text)}`);
    return mac;
  }

  /**
   * veb `static`: the entry lasts until it is deleted, the port's guest disconnects (the port forgets its entries)
   * or a reload re-applies the configuration; `static MAC on "PORT"` in the configuration is the permanent form.
   */
  private addStatic(name: string, macText: string, port: string): SwitchEditResult {
    const sw = this.sw(name);
    const mac = this.mac(macText);
    if (parseInt(mac.slice(0, 2), 16) & 1) throw new ControlError(`expected a unicast MAC address, got multicast address ${mac}`);
    if (mac === '00:00:00:00:00:00') throw new ControlError('expected a unicast MAC address, got the all-zero address');
    if (!sw.portByName(port)) {
      const known = sw.ports().map((p) => JSON.stringify(p.name)).join(', ');
      throw new ControlError(`switch ${JSON.stringify(name)} has no port ${JSON.stringify(port)}${known ? `, expected one of: ${known}` : ''}`);
    }
    try {
      sw.addStatic(mac, port);
    } catch (err) {
      throw new ControlError((err as Error).message);
    }
    return { switch: name, mac, port };
  }

  private delAddr(name: string, macText: string): SwitchEditResult {
    const sw = this.sw(name);
    const mac = this.mac(macText);
    if (!sw.delAddr(mac)) throw new ControlError(`switch ${JSON.stringify(name)} has no entry for ${mac}`);
    return { switch: name, mac };
  }

  private qemuArgs(vmName: string, tcg: boolean, memory: string | undefined): QemuArgsResult {
    const cfg = this.ctx.daemon.config;
    const vm = cfg.vms.find((v) => v.name === vmName);
    if (!vm) {
      const known = cfg.vms.map((v) => JSON.stringify(v.name)).join(', ');
      throw new ControlError(`unknown vm ${JSON.stringify(vmName)}${known ? `, expected one of: ${known}` : ' (no vms configured)'}`);
    }
    try {
      return { vm: vm.name, args: qemuArgsForVm(cfg, vm, { tcg, memory }) };
    } catch (err) {
      throw new ControlError((err as Error).message);
    }
  }

  /** Re-read the configuration; a bad one leaves everything running as it was (the error names file:line:col). */
  private async reload(): Promise<ReloadReport> {
    let next: Config;
    try {
      next = this.ctx.loadConfig();
    } catch (err) {
      // The operator may not be the one watching the log: say here too why nothing changed.
      this.ctx.log.warn({ reason: (err as Error).message }, 'reload refused: the configuration has errors, the running one stays');
      throw new ControlError((err as Error).message);
    }
    const report = await this.ctx.daemon.reload(next); // Daemon.reload logs a refusal itself
    this.ctx.log.info({ ...report }, 'configuration reloaded');
    this.ctx.afterReload?.(this.ctx.daemon.config);
    return report;
  }

  private logLevel(level: string): LogLevelResult {
    if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new ControlError(`expected a log level (${LOG_LEVELS.join(', ')}), got ${JSON.stringify(level)}`);
    const previous = this.ctx.log.level;
    setLogLevel(this.ctx.log, level);
    this.ctx.log.info({ previous, level }, 'log level changed');
    return { previous, level };
  }
}
