/**
 * The embedded default configuration (`vhostd --default`): sockets in ./run relative to the current
 * working directory, one switch "default", and two vms with one interface each on it.
 */
import type { Config } from './model.js';
import { parseConfig } from './parser.js';

export const DEFAULT_CONFIG_NAME = '<default>';

export const DEFAULT_CONFIG_TEXT = `# vhostd built-in default configuration
socket dir "run"

switch "default" {
    mtu 1500
}

vm "vm1" {
    interface { switch "default" }
}

vm "vm2" {
    interface { switch "default" }
}
`;

/** The default configuration with relative paths resolved against `cwd`. */
export function defaultConfig(cwd: string = process.cwd()): Config {
  return parseConfig(DEFAULT_CONFIG_TEXT, DEFAULT_CONFIG_NAME, { baseDir: cwd });
}
