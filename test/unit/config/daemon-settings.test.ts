/**
 * Daemon-wide settings (docs/configuration.md): `control "PATH"`, `socket owner [user][:group]` (names resolved from
 * passwd/group files at parse time), `metrics listen "ADDRESS:PORT"`, `log level LEVEL`, and their errors.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/config/lexer.js';
import { controlSocketPath, vmSocketOwner } from '../../../src/config/model.js';
import { lookupId, splitOwner } from '../../../src/config/owner.js';
import { parseConfig, parseListenAddress, type ParseOptions } from '../../../src/config/parser.js';

const dir = mkdtempSync(join(tmpdir(), 'vhostd-owner-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const passwd = join(dir, 'passwd');
const group = join(dir, 'group');
writeFileSync(passwd, 'root:x:0:0:root:/root:/bin/bash\n_vmd:x:812:812::/var/empty:/sbin/nologin\n');
writeFileSync(group, 'root:x:0:\nwheel:x:10:root\n_vmd:x:812:\nvhost-ops:x:2001:alice,bob\n');
const opts: ParseOptions = { baseDir: '/etc/vhostd', idDatabases: { passwd, group } };

const parse = (text: string) => parseConfig(text, 'vhostd.conf', opts);

function errorOf(text: string): string {
  try {
    parse(text);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected parseConfig to throw');
}

describe('control "PATH"', () => {
  it('defaults to <socket dir>/vhostd.sock without setting controlPath', () => {
    const cfg = parse('socket dir "/run/vhostd"\n');
    expect(cfg.controlPath).toBeUndefined();
    expect(controlSocketPath(cfg)).toBe('/run/vhostd/vhostd.sock');
  });

  it('resolves a relative path against the configuration directory, like socket dir', () => {
    expect(parse('control "ctl/vhostd.sock"').controlPath).toBe('/etc/vhostd/ctl/vhostd.sock');
    expect(parse('control "/run/vhostctl.sock"').controlPath).toBe('/run/vhostctl.sock');
  });

  it('refuses a path longer than sun_path allows, at the statement', () => {
    expect(errorOf(`\ncontrol "/${'c'.repeat(110)}"`)).toMatch(/^vhostd.conf:2:9: expected a control socket path of at most 107 bytes, got 111 bytes/);
  });

  it('checks the default path too, at socket dir', () => {
    expect(errorOf(`socket dir "/${'d'.repeat(100)}"`)).toMatch(/^vhostd.conf:1:12: expected a control socket path of at most 107 bytes, got 113 bytes/);
  });

  it('needs a quoted, non-empty path, once', () => {
    expect(errorOf('control /run/x.sock')).toBe('vhostd.conf:1:9: expected a control socket path in double quotes like "/run/vhostd/vhostd.sock", got /run/x.sock without quotes');
    expect(errorOf('control ""')).toBe('vhostd.conf:1:9: expected a non-empty control socket path, got ""');
    expect(errorOf('control "/a"\ncontrol "/b"')).toBe('vhostd.conf:2:1: duplicate control, already set at 1:9');
  });
});

describe('socket owner [user][:group]', () => {
  it('resolves user, user:group and :group from the databases, quoted or not', () => {
    expect(parse('socket owner "_vmd"').socketOwner).toEqual({ user: '_vmd', uid: 812, gid: -1 });
    expect(parse('socket owner "_vmd:wheel"').socketOwner).toEqual({ user: '_vmd', group: 'wheel', uid: 812, gid: 10 });
    expect(parse('socket owner ":vhost-ops"').socketOwner).toEqual({ group: 'vhost-ops', uid: -1, gid: 2001 });
    expect(parse('socket owner root:wheel').socketOwner).toEqual({ user: 'root', group: 'wheel', uid: 0, gid: 10 });
  });

  it('takes decimal ids without a lookup', () => {
    expect(parse('socket owner "1234:5678"').socketOwner).toEqual({ user: '1234', group: '5678', uid: 1234, gid: 5678 });
  });

  it('absent: the field is not set', () => {
    expect(parse('').socketOwner).toBeUndefined();
  });

  it('an unknown user or group is an error at the owner, naming the file', () => {
    expect(errorOf('socket owner "nosuch:wheel"')).toBe(`vhostd.conf:1:14: unknown user "nosuch" (not in ${passwd})`);
    expect(errorOf('\nsocket owner ":staff"')).toBe(`vhostd.conf:2:14: unknown group "staff" (not in ${group})`);
  });

  it('a malformed owner is an error', () => {
    expect(errorOf('socket owner ":"')).toBe('vhostd.conf:1:14: expected a socket owner like "user", "user:group" or ":group" (names or decimal ids), got ":"');
    expect(errorOf('socket owner "a:b:c"')).toMatch(/^vhostd.conf:1:14: expected a socket owner like/);
    expect(errorOf('socket owner')).toBe('vhostd.conf:1:13: expected an owner like "user:group" or ":group", got end of file');
  });

  it('uses /etc/passwd and /etc/group by default', () => {
    const cfg = parseConfig('socket owner "root:root"', 'vhostd.conf', { baseDir: '/' });
    expect(cfg.socketOwner).toEqual({ user: 'root', group: 'root', uid: 0, gid: 0 });
  });

  it('splitOwner and lookupId', () => {
    expect(splitOwner('a')).toEqual({ user: 'a' });
    expect(splitOwner(':g')).toEqual({ group: 'g' });
    expect(splitOwner('')).toBeNull();
    expect(splitOwner('a b')).toBeNull();
    expect(lookupId('x:x:1:\ny:x:2:\n', 'y')).toBe(2);
    expect(lookupId('x:x:1:\n', 'z')).toBeUndefined();
  });
});


describe('owner [user][:group] inside a vm block', () => {
  const vm = (body: string) => `switch "s" {}\nvm "v1" { interface { switch "s" }\n${body} }\nvm "v2" { interface { switch "s" } }\n`;

  it('resolves like socket owner, quoted or not, for that vm only', () => {
    expect(parse(vm('owner ":vhost-ops"')).vms.map((v) => v.owner)).toEqual([{ group: 'vhost-ops', uid: -1, gid: 2001 }, undefined]);
    expect(parse(vm('owner _vmd:wheel')).vms[0]!.owner).toEqual({ user: '_vmd', group: 'wheel', uid: 812, gid: 10 });
    expect(parse(vm('owner "1234"')).vms[0]!.owner).toEqual({ user: '1234', uid: 1234, gid: -1 });
    expect(parse(vm('')).vms[0]!).not.toHaveProperty('owner');
  });

  it('replaces, part by part, what socket owner gives the vm\'s sockets', () => {
    const cfg = parse(`socket owner "_vmd:wheel"\n${vm('owner ":vhost-ops"')}`);
    expect(vmSocketOwner(cfg, 'v1')).toEqual({ user: '_vmd', group: 'vhost-ops', uid: 812, gid: 2001 });
    expect(vmSocketOwner(cfg, 'v2')).toEqual(cfg.socketOwner);
    expect(vmSocketOwner(parse(vm('owner "root"')), 'v1')).toEqual({ user: 'root', uid: 0, gid: -1 });
    expect(vmSocketOwner(parse(vm('')), 'v1')).toBeUndefined();
  });

  it('an unknown name, a malformed owner or a second owner is an error at the statement', () => {
    expect(errorOf(vm('owner ":staff"'))).toBe(`vhostd.conf:3:7: unknown group "staff" (not in ${group})`);
    expect(errorOf(vm('owner "a:b:c"'))).toBe('vhostd.conf:3:7: expected an owner like "user", "user:group" or ":group" (names or decimal ids), got "a:b:c"');
    expect(errorOf(vm('owner root; owner _vmd'))).toBe('vhostd.conf:3:13: duplicate owner, already set at 3:7');
  });
});
describe('metrics listen "ADDRESS:PORT"', () => {
  it('IPv4, bracketed IPv6 and host names', () => {
    expect(parse('metrics listen "127.0.0.1:9100"').metricsListen).toEqual({ host: '127.0.0.1', port: 9100 });
    expect(parse('metrics listen "[::1]:9100"').metricsListen).toEqual({ host: '::1', port: 9100 });
    expect(parse('metrics listen metrics.example.org:65535').metricsListen).toEqual({ host: 'metrics.example.org', port: 65535 });
    expect(parse('').metricsListen).toBeUndefined();
  });

  it('bad addresses and ports are errors at the value', () => {
    expect(errorOf('metrics listen "127.0.0.1"')).toBe('vhostd.conf:1:16: expected an address and port like "127.0.0.1:9100" or "[::1]:9100", got "127.0.0.1": no port');
    expect(errorOf('metrics listen "::1:9100"')).toMatch(/got "::1:9100": an IPv6 address goes in brackets$/);
    expect(errorOf('metrics listen "1.2.3.4:0"')).toMatch(/the port must be a number from 1 to 65535$/);
    expect(errorOf('metrics listen "1.2.3.4:65536"')).toMatch(/the port must be a number from 1 to 65535$/);
    expect(errorOf('metrics listen "1.2.3.256:80"')).toMatch(/"1.2.3.256" is not an IPv4 address$/);
    expect(errorOf('metrics listen "[fe80::zz]:80"')).toMatch(/"fe80::zz" is not an IPv6 address$/);
    expect(errorOf('metrics listen "-bad-.host:80"')).toMatch(/"-bad-.host" is not a host name$/);
    expect(errorOf('metrics port 80')).toBe('vhostd.conf:1:9: unknown keyword "port" in the metrics statement, expected one of: listen');
  });

  it('parseListenAddress directly', () => {
    expect(parseListenAddress('0.0.0.0:1')).toEqual({ host: '0.0.0.0', port: 1 });
    expect(parseListenAddress('[::]:80')).toEqual({ host: '::', port: 80 });
    expect(typeof parseListenAddress(':80')).toBe('string');
  });
});

describe('log level LEVEL', () => {
  it('pino level names', () => {
    for (const level of ['fatal', 'error', 'warn', 'info', 'debug', 'trace']) expect(parse(`log level ${level}`).logLevel).toBe(level);
    expect(parse('').logLevel).toBeUndefined();
  });

  it('an unknown level or a duplicate is an error', () => {
    expect(errorOf('log level verbose')).toBe('vhostd.conf:1:11: expected fatal or error or warn or info or debug or trace after log level, got "verbose"');
    expect(errorOf('log level info\nlog level debug')).toBe('vhostd.conf:2:5: duplicate log level, already set at 1:11');
  });
});

describe('errors of several settings are collected together', () => {
  it('sorted by position', () => {
    expect(errorOf('socket owner ":nogrp"\nmetrics listen "x:0"\ncontrol ""').split('\n')).toEqual([
      `vhostd.conf:1:14: unknown group "nogrp" (not in ${group})`,
      'vhostd.conf:2:16: expected an address and port like "127.0.0.1:9100" or "[::1]:9100", got "x:0": the port must be a number from 1 to 65535',
      'vhostd.conf:3:9: expected a non-empty control socket path, got ""',
    ]);
  });
});
