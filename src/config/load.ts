/**
 * Reading a configuration file from disk: relative paths in it resolve against the file's directory.
 * A missing or unreadable file is a ConfigError naming the path (no position: there is no text).
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { VhostError } from '../util/errors.js';
import type { Config } from './model.js';
import { parseConfig } from './parser.js';

export function loadConfigFile(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOENT' ? 'no such file'
      : e.code === 'EACCES' ? 'permission denied'
      : e.code === 'EISDIR' ? 'is a directory'
      : e.message;
    throw new VhostError('ERR_CONFIG', `${path}: cannot read configuration file: ${why}`, { cause: err });
  }
  return parseConfig(text, path, { baseDir: dirname(resolve(path)) });
}
