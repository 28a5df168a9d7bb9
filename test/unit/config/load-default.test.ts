/** loadConfigFile (paths relative to the file, unreadable files) and the embedded default. */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG_TEXT, defaultConfig } from '../../../src/config/default.js';
import { loadConfigFile } from '../../../src/config/load.js';
import { generatedLladdr } from '../../../src/config/parser.js';
import { VhostError } from '../../../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'vhostd-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('loadConfigFile', () => {
  it('resolves relative paths against the directory of the file', () => {
    mkdirSync(join(dir, 'etc'));
    const file = join(dir, 'etc', 'vhostd.conf');
    writeFileSync(file, 'socket dir "sockets"\nswitch "s" {}\nvm "v" { interface { switch "s" } }\n');
    const cfg = loadConfigFile(file);
    expect(cfg.file).toBe(file);
    expect(cfg.socketDir).toBe(join(dir, 'etc', 'sockets'));
    expect(cfg.vms[0]!.interfaces[0]!.socketPath).toBe(join(dir, 'etc', 'sockets', 'v.net0.sock'));
  });

  it('reports errors with the path as given', () => {
    const file = join(dir, 'bad.conf');
    writeFileSync(file, 'switch "s" {\n  mtu big\n}\n');
    expect(() => loadConfigFile(file)).toThrow(`${file}:2:7: expected an mtu (a decimal number from 68 to 65535), got "big"`);
  });

  it('a missing file is an ERR_CONFIG error naming the path', () => {
    const file = join(dir, 'nope.conf');
    let err: unknown;
    try {
      loadConfigFile(file);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VhostError);
    expect((err as VhostError).code).toBe('ERR_CONFIG');
    expect((err as VhostError).message).toBe(`${file}: cannot read configuration file: no such file`);
  });

  it('a directory is an ERR_CONFIG error naming the path', () => {
    expect(() => loadConfigFile(dir)).toThrow(`${dir}: cannot read configuration file: is a directory`);
  });
});

describe('defaultConfig', () => {
  it('is ./run relative to cwd, switch "default" (mtu 1500), vm1 and vm2 with one interface each', () => {
    const cfg = defaultConfig('/srv/x');
    expect(cfg.socketDir).toBe('/srv/x/run');
    expect(cfg.switches.map(({ name, mtu }) => ({ name, mtu }))).toEqual([{ name: 'default', mtu: 1500 }]);
    expect(cfg.vms.map((v) => v.name)).toEqual(['vm1', 'vm2']);
    expect(cfg.vms.map((v) => v.interfaces.map((i) => [i.switchName, i.socketPath, i.lladdr]))).toEqual([
      [['default', '/srv/x/run/vm1.net0.sock', generatedLladdr('vm1', 0)]],
      [['default', '/srv/x/run/vm2.net0.sock', generatedLladdr('vm2', 0)]],
    ]);
  });

  it('defaults to process.cwd()', () => {
    expect(defaultConfig().socketDir).toBe(join(process.cwd(), 'run'));
  });

  it('exports its text', () => {
    expect(DEFAULT_CONFIG_TEXT).toContain('socket dir "run"');
  });
});
