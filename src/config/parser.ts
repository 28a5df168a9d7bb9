/**
 * Parser for the vm.conf-style configuration. Two phases:
 *   1. syntax: a keyword table per block (TOP, SOCKET, SWITCH, VM, INTERFACE) maps each keyword to a
 *      handler that consumes its arguments into a raw, position-carrying tree. A new keyword is one
 *      table entry plus one field on the raw node. Syntax errors stop at the first one.
 *   2. validation: names, references, MACs, paths -> the model of model.ts. Value and semantic errors
 *      are collected and thrown together (sorted by position) as one ConfigError.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { isIPv6 } from 'node:net';
import { dirname, resolve } from 'node:path';
import { ConfigError, describeToken, tokenize, type Diagnostic, type Token } from './lexer.js';
import { resolveId, splitOwner, SYSTEM_ID_DATABASES, type IdDatabases } from './owner.js';
import {
  DEFAULT_MTU,
  DEFAULT_SOCKET_DIR,
  MAX_MAX_ADDR,
  MAX_MTU,
  MAX_TIMEOUT,
  MAX_MAX_GUEST_MEMORY,
  MIN_MAX_GUEST_MEMORY,
  MIN_MTU,
  MIN_TIMEOUT,
  type RuleConfig,
  type StaticConfig,
  type Config,
  type InterfaceConfig,
  type SourcePos,
  type SwitchConfig,
  type VmConfig,
  type DiskConfig,
  type LogLevel,
  type SocketOwner,
} from './model.js';

export interface ParseOptions {
  /** Directory that relative paths are resolved against; default: the directory of `file`. */
  baseDir?: string;
  /** passwd/group files for `socket owner` names; default /etc/passwd and /etc/group. */
  idDatabases?: IdDatabases;
}

/** Longest unix socket path Linux accepts (sun_path is 108 bytes including the NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;
/** Prefix of generated addresses: locally administered (bit 1 set), unicast (bit 0 clear). */
export const GENERATED_MAC_PREFIX = 'fe:e1:ba';
export const MAC_EXAMPLE = 'fe:e1:bb:f1:c8:01';

// ---------------------------------------------------------------------------------------------------
// Raw tree (phase 1 output)

interface Located<T> {
  value: T;
  pos: SourcePos;
}

interface RawConfig {
  socketDir?: Located<string>;
  control?: Located<string>;
  owner?: Located<string>;
  metricsListen?: Located<string>;
  logLevel?: Located<LogLevel>;
  backingDirs?: Located<string>[];
  maxGuestMemory?: Located<number>;
  switches: RawSwitch[];
  vms: RawVm[];
}

interface RawSwitch {
  pos: SourcePos;
  name: Located<string>;
  mtu?: Located<number>;
  maxAddr?: Located<number>;
  timeout?: Located<number>;
  poll?: Located<boolean>;
  vport?: Located<string>;
  statics: { mac: Located<string>; port: Located<string>; pos: SourcePos }[];
  rules: { rule: Omit<RuleConfig, 'pos' | 'port'>; port: Located<string>; pos: SourcePos }[];
}

interface RawVm {
  pos: SourcePos;
  name: Located<string>;
  interfaces: RawInterface[];
  disks: RawDisk[];
  owner?: Located<string>;
}

interface RawDisk {
  pos: SourcePos;
  path: Located<string>;
  format?: Located<'raw' | 'qcow2'>;
  readOnly?: Located<boolean>;
  cache?: Located<number>;
}

interface RawInterface {
  pos: SourcePos;
  /** Position of the `{`: missing-switch errors point here. */
  brace: SourcePos;
  switchRef?: Located<string>;
  lladdr?: Located<string>;
  locked?: Located<boolean>;
  learn?: Located<boolean>;
  discover?: Located<boolean>;
  blockNonIp?: Located<boolean>;
  span?: Located<boolean>;
  protected?: Located<number[]>;
  untagged?: Located<number | 'none'>;
  tagged?: Located<number[]>;
  maxAddr?: Located<number>;
}

// ---------------------------------------------------------------------------------------------------
// Keyword tables (phase 1). A handler consumes the arguments after its keyword; the block loop then
// requires the end of the statement (newline, `;`, or the block's `}`).

type Handler<C> = (p: Parser, ctx: C, keyword: Token) => void;
type KeywordTable<C> = Readonly<Record<string, Handler<C>>>;

const TOP: KeywordTable<RawConfig> = {
  socket: (p, cfg, kw) => p.subKeyword(SOCKET, cfg, kw),
  switch: (p, cfg, kw) => {
    const sw: RawSwitch = { pos: pos(kw), name: p.string('a switch name', '"uplink"'), statics: [], rules: [] };
    p.block(SWITCH, sw, `switch ${JSON.stringify(sw.name.value)}`, 'switch');
    cfg.switches.push(sw);
  },
  vm: (p, cfg, kw) => {
    const vm: RawVm = { pos: pos(kw), name: p.string('a vm name', '"vm1"'), interfaces: [], disks: [] };
    p.block(VM, vm, `vm ${JSON.stringify(vm.name.value)}`, 'vm');
    cfg.vms.push(vm);
  },
  control: (p, cfg, kw) => p.setOnce(cfg, 'control', p.string('a control socket path', '"/run/vhostd/vhostd.sock"'), kw, 'control'),
  metrics: (p, cfg, kw) => p.subKeyword(METRICS, cfg, kw),
  log: (p, cfg, kw) => p.subKeyword(LOG, cfg, kw),
  backing: (p, cfg, kw) => p.subKeyword(BACKING, cfg, kw),
  /** `max guest memory SIZE`: the most guest RAM one front-end may map (SET_MEM_TABLE, ADD_MEM_REG). */
  max: (p, cfg, kw) => {
    p.expectWord('guest', 'after max (max guest memory SIZE)');
    p.expectWord('memory', 'after max guest (max guest memory SIZE)');
    const v = p.next();
    const bytes = v.kind === 'word' ? parseMemorySize(v.text) : null;
    if (bytes === null) p.fail(v, `expected a guest memory size from 1G to 64T like 1T or 512G after max guest memory, got ${describeToken(v)}`);
    p.setOnce(cfg, 'maxGuestMemory', { value: bytes as number, pos: pos(v) }, kw, 'max guest memory');
  },
};

/** `backing dir "PATH"`: may repeat, each adds a directory where qcow2 backing files may lie. */
const BACKING: KeywordTable<RawConfig> = {
  dir: (p, cfg) => (cfg.backingDirs ??= []).push(p.string('a backing file directory', '"/var/lib/vhostd/base"')),
};

/**
 * A size with an optional binary suffix (K/M/G/T, any case); null when malformed or outside min..max. A suffix too
 * large for the range needs no separate rejection: every such size but 0 is above max.
 */
function parseBinarySize(text: string, min: number, max: number): number | null {
  const m = /^(\d+)([KMGT])?$/i.exec(text);
  if (!m) return null;
  const bytes = Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] ?? ' ').toUpperCase());
  return bytes >= min && bytes <= max ? bytes : null;
}

/** `max guest memory SIZE`: 1 GiB..64 TiB. */
function parseMemorySize(text: string): number | null {
  return parseBinarySize(text, MIN_MAX_GUEST_MEMORY, MAX_MAX_GUEST_MEMORY);
}

/** `socket dir "PATH"`, `socket owner [user][:group]`. */
const SOCKET: KeywordTable<RawConfig> = {
  dir: (p, cfg, kw) => p.setOnce(cfg, 'socketDir', p.string('a socket directory', '"/run/vhostd"'), kw, 'socket dir'),
  // Quotes optional: vm.conf writes `socket owner _vmd:wheel`.
  owner: (p, cfg, kw) => p.setOnce(cfg, 'owner', p.stringOrWord('an owner', '"user:group" or ":group"'), kw, 'socket owner'),
};

/** `metrics listen "ADDRESS:PORT"`. */
const METRICS: KeywordTable<RawConfig> = {
  listen: (p, cfg, kw) => p.setOnce(cfg, 'metricsListen', p.stringOrWord('an address and port', '"127.0.0.1:9100"'), kw, 'metrics listen'),
};

export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

/** `log level LEVEL`. */
const LOG: KeywordTable<RawConfig> = {
  level: (p, cfg, kw) => {
    const t = p.peek();
    const level = p.oneOf([...LOG_LEVELS], 'after log level') as LogLevel;
    p.setOnce(cfg, 'logLevel', { value: level, pos: pos(t) }, kw, 'log level');
  },
};

const SWITCH: KeywordTable<RawSwitch> = {
  mtu: (p, sw, kw) => p.setOnce(sw, 'mtu', p.number('an mtu', MIN_MTU, MAX_MTU), kw, 'mtu'),
  maxaddr: (p, sw, kw) => p.setOnce(sw, 'maxAddr', p.number('an address count', 1, MAX_MAX_ADDR), kw, 'maxaddr'),
  timeout: (p, sw, kw) => p.setOnce(sw, 'timeout', p.number('a timeout in seconds', MIN_TIMEOUT, MAX_TIMEOUT), kw, 'timeout'),
  poll: (p, sw, kw) => p.setOnce(sw, 'poll', { value: true, pos: pos(kw) }, kw, 'poll'),
  vport: (p, sw, kw) => p.setOnce(sw, 'vport', p.string('a vport interface name', '"vport0"'), kw, 'vport'),
  static: (p, sw, kw) => {
    const mac = p.mac();
    p.expectWord('on', 'after the static MAC address');
    const port = p.string('a port name', '"vm13.net0"');
    if (mac) sw.statics.push({ mac, port, pos: pos(kw) });
  },
  rule: (p, sw, kw) => {
    const action = p.oneOf(['block', 'pass'], 'after rule') as 'block' | 'pass';
    let dir: RuleConfig['dir'] = 'in/out';
    if (p.peekWord('in') || p.peekWord('out') || p.peekWord('in/out')) dir = p.next().text as RuleConfig['dir'];
    p.expectWord('on', 'in the rule (rule block|pass [in|out|in/out] on "PORT" ...)');
    const port = p.string('a port name', '"vm13.net0"');
    const rule: Omit<RuleConfig, 'pos' | 'port'> = { action, dir };
    let ok = true;
    const anyMac = (): string | undefined => {
      const m = p.anyMac();
      if (m === undefined) ok = false;
      return m;
    };
    for (;;) {
      const t = p.peek();
      if (t.kind !== 'word') break;
      if (t.text === 'src' && rule.src === undefined && rule.arp === undefined) {
        p.next();
        rule.src = anyMac();
      } else if (t.text === 'dst' && rule.dst === undefined && rule.arp === undefined) {
        p.next();
        rule.dst = anyMac();
      } else if ((t.text === 'arp' || t.text === 'rarp') && rule.arp === undefined) {
        p.next();
        const arp: NonNullable<RuleConfig['arp']> = { rarp: t.text === 'rarp' };
        rule.arp = arp;
        if (p.peekWord('request') || p.peekWord('reply')) arp.op = p.next().text as 'request' | 'reply';
        for (;;) {
          const f = p.peek();
          if (f.kind !== 'word') break;
          if ((f.text === 'sha' || f.text === 'tha') && arp[f.text] === undefined) {
            p.next();
            arp[f.text] = anyMac();
          } else if ((f.text === 'spa' || f.text === 'tpa') && arp[f.text] === undefined) {
            p.next();
            const ip = p.ipv4();
            if (ip === undefined) ok = false;
            arp[f.text] = ip;
          } else {
            p.fail(f, `expected sha, spa, tha, tpa or the end of the rule, got ${describeToken(f)}`);
          }
        }
      } else {
        p.fail(t, `expected src, dst, arp, rarp or the end of the rule, got ${describeToken(t)}`);
      }
    }
    if (ok) sw.rules.push({ rule, port, pos: pos(kw) });
  },
};

const VM: KeywordTable<RawVm> = {
  interface: (p, vm, kw) => {
    const iface: RawInterface = { pos: pos(kw), brace: pos(p.peek()) };
    p.block(INTERFACE, iface, 'interface', 'interface');
    vm.interfaces.push(iface);
  },
  /** `disk "PATH" [format qcow2|raw] [readonly] [cache SIZE]` (options in any order). */
  disk: (p, vm, kw) => {
    const d: RawDisk = { pos: pos(kw), path: p.string('an image path', '"/var/vmm/vm13.qcow2"') };
    for (;;) {
      const t = p.peek();
      if (t.kind !== 'word') break;
      if (t.text === 'format' && !d.format) {
        p.next();
        const f = p.peek();
        d.format = { value: p.oneOf(['qcow2', 'raw'], 'after format') as 'raw' | 'qcow2', pos: pos(f) };
      } else if (t.text === 'readonly' && !d.readOnly) {
        p.next();
        d.readOnly = { value: true, pos: pos(t) };
      } else if (t.text === 'cache' && !d.cache) {
        p.next();
        const v = p.next();
        const bytes = v.kind === 'word' ? parseCacheSize(v.text) : null;
        if (bytes === null) p.fail(v, `expected a qcow2 metadata cache size from 1M to 1G like 32M after cache, got ${describeToken(v)}`);
        d.cache = { value: bytes as number, pos: pos(v) };
      } else {
        p.fail(t, `expected format, readonly, cache or the end of the disk statement, got ${describeToken(t)}`);
      }
    }
    vm.disks.push(d);
  },
  /** `owner [user][:group]`: owner of this vm's device sockets instead of `socket owner` (quotes optional). */
  owner: (p, vm, kw) => p.setOnce(vm, 'owner', p.stringOrWord('an owner', '"user:group" or ":group"'), kw, 'owner'),
};

/** `cache SIZE` of a disk: 1 MiB..1 GiB (parseBinarySize). */
function parseCacheSize(text: string): number | null {
  return parseBinarySize(text, 2 ** 20, 2 ** 30);
}

/** A boolean flag keyword and its `-` form, e.g. `learn` / `-learn`. */
const flag = (key: 'learn' | 'discover' | 'blockNonIp' | 'span', value: boolean, name: string): Handler<RawInterface> => (p, iface, kw) =>
  p.setOnce(iface, key, { value, pos: pos(kw) }, kw, name);

const INTERFACE: KeywordTable<RawInterface> = {
  switch: (p, iface, kw) => p.setOnce(iface, 'switchRef', p.string('a switch name', '"uplink"'), kw, 'switch'),
  lladdr: (p, iface, kw) => p.setOnce(iface, 'lladdr', p.mac(), kw, 'lladdr'),
  locked: (p, iface, kw) => {
    p.expectWord('lladdr', 'after locked (locked lladdr MAC)');
    p.setOnce(iface, 'locked', { value: true, pos: pos(kw) }, kw, 'locked lladdr');
    p.setOnce(iface, 'lladdr', p.mac(), kw, 'lladdr');
  },
  learn: flag('learn', true, 'learn'),
  '-learn': flag('learn', false, 'learn'),
  discover: flag('discover', true, 'discover'),
  '-discover': flag('discover', false, 'discover'),
  blocknonip: flag('blockNonIp', true, 'blocknonip'),
  '-blocknonip': flag('blockNonIp', false, 'blocknonip'),
  span: flag('span', true, 'span'),
  protected: (p, iface, kw) => p.setOnce(iface, 'protected', p.numberList('protected domain ids', 1, 31, false), kw, 'protected'),
  untagged: (p, iface, kw) => {
    const t = p.peek();
    const v: Located<number | 'none'> | undefined = t.kind === 'word' && t.text === 'none' ? { value: 'none', pos: pos(p.next()) } : p.number('an untagged VLAN id', 1, 4094);
    p.setOnce(iface, 'untagged', v, kw, 'untagged');
  },
  tagged: (p, iface, kw) => p.setOnce(iface, 'tagged', p.numberList('tagged VLAN ids', 1, 4094, true), kw, 'tagged'),
  maxaddr: (p, iface, kw) => p.setOnce(iface, 'maxAddr', p.number('an address count', 1, MAX_MAX_ADDR), kw, 'maxaddr'),
};

const pos = (t: SourcePos): SourcePos => ({ line: t.line, col: t.col });
const at = (p: SourcePos): string => `${p.line}:${p.col}`;
const keywordList = (table: object): string => Object.keys(table).join(', ');

// ---------------------------------------------------------------------------------------------------
// Phase 1: token stream -> raw tree

class Parser {
  private i = 0;
  readonly diagnostics: Diagnostic[] = [];

  constructor(
    private readonly tokens: Token[],
    readonly file: string,
  ) {}

  peek(): Token {
    return this.tokens[this.i]!;
  }

  next(): Token {
    const t = this.tokens[this.i]!;
    if (t.kind !== 'eof') this.i++;
    return t;
  }

  /** Record an error and keep parsing (the syntax is intact). */
  report(at: SourcePos, message: string): void {
    this.diagnostics.push({ file: this.file, line: at.line, col: at.col, message });
  }

  /** Record an error and stop: the token stream cannot be trusted past this point. */
  fail(at: SourcePos, message: string): never {
    this.report(at, message);
    throw new ConfigError(this.diagnostics);
  }

  /** Statements until `}` (when `open` is given) or end of file (top level). */
  statements<C>(table: KeywordTable<C>, ctx: C, where: string, open?: Token): void {
    for (;;) {
      const t = this.next();
      if (t.kind === 'eol') continue;
      if (open && t.kind === '}') return;
      if (t.kind === 'eof') {
        if (open) this.fail(t, `expected "}" to close the ${where} opened at ${at(open)}, got end of file`);
        return;
      }
      if (t.kind !== 'word') this.fail(t, `expected a keyword (${keywordList(table)}) ${where === 'top level' ? 'at' : 'in the'} ${where}, got ${describeToken(t)}`);
      this.dispatch(table, ctx, t, where);
      const end = this.peek();
      if (end.kind === 'eol') this.next();
      else if (end.kind !== 'eof' && !(open && end.kind === '}')) {
        this.fail(end, `expected end of line${open ? ', ";" or "}"' : ' or ";"'} after the ${t.text} statement, got ${describeToken(end)}`);
      }
    }
  }

  dispatch<C>(table: KeywordTable<C>, ctx: C, kw: Token, where: string): void {
    const handler = Object.hasOwn(table, kw.text) ? table[kw.text] : undefined;
    if (!handler) {
      this.fail(kw, `unknown keyword ${JSON.stringify(kw.text)} ${where === 'top level' ? 'at' : 'in the'} ${where}, expected one of: ${keywordList(table)}`);
    }
    handler(this, ctx, kw);
  }

  /** `{ statements }`; the `{` must be on the same line as its keyword. */
  block<C>(table: KeywordTable<C>, ctx: C, what: string, kind: string): void {
    const open = this.peek();
    if (open.kind !== '{') this.fail(open, `expected "{" to open the ${what} block, got ${describeToken(open)}`);
    this.next();
    this.statements(table, ctx, `${kind} block`, open);
  }

  /** A keyword whose first argument is itself a keyword, e.g. `socket dir ...`. */
  subKeyword<C>(table: KeywordTable<C>, ctx: C, kw: Token): void {
    const t = this.next();
    if (t.kind !== 'word') this.fail(t, `expected one of: ${keywordList(table)} after ${kw.text}, got ${describeToken(t)}`);
    this.dispatch(table, ctx, t, `${kw.text} statement`);
  }

  /** Store a setting; a second occurrence in the same block is reported and ignored. */
  setOnce<C, K extends keyof C>(ctx: C, key: K, value: C[K] & (Located<unknown> | undefined), kw: Token, name: string): void {
    const prev = ctx[key] as Located<unknown> | undefined;
    if (prev) this.report(kw, `duplicate ${name}, already set at ${at(prev.pos)}`);
    else if (value) ctx[key] = value;
  }

  string(what: string, example: string): Located<string> {
    const t = this.next();
    if (t.kind === 'string') return { value: t.text, pos: pos(t) };
    const got = t.kind === 'word' ? `${t.text} without quotes` : describeToken(t);
    return this.fail(t, `expected ${what} in double quotes like ${example}, got ${got}`);
  }

  /** A quoted string or a bare word (values that cannot contain spaces). */
  stringOrWord(what: string, example: string): Located<string> {
    const t = this.next();
    if (t.kind === 'string' || t.kind === 'word') return { value: t.text, pos: pos(t) };
    return this.fail(t, `expected ${what} like ${example}, got ${describeToken(t)}`);
  }

  /** A decimal number; out of range is reported (and undefined returned) without stopping. */
  number(what: string, min: number, max: number): Located<number> | undefined {
    const t = this.next();
    if (t.kind !== 'word' || !/^[0-9]+$/.test(t.text)) {
      this.fail(t, `expected ${what} (a decimal number from ${min} to ${max}), got ${describeToken(t)}`);
    }
    const value = Number(t.text);
    if (value < min || value > max) {
      this.report(t, `expected ${what} from ${min} to ${max}, got ${t.text}`);
      return undefined;
    }
    return { value, pos: pos(t) };
  }

  /** True if the next token is the word `w`. */
  peekWord(w: string): boolean {
    const t = this.peek();
    return t.kind === 'word' && t.text === w;
  }

  /** Require the word `w`. */
  expectWord(w: string, where: string): void {
    const t = this.next();
    if (t.kind !== 'word' || t.text !== w) this.fail(t, `expected ${JSON.stringify(w)} ${where}, got ${describeToken(t)}`);
  }

  /** One of `words`. */
  oneOf(words: string[], where: string): string {
    const t = this.next();
    if (t.kind !== 'word' || !words.includes(t.text)) this.fail(t, `expected ${words.join(' or ')} ${where}, got ${describeToken(t)}`);
    return t.text;
  }

  /** Any MAC address (group addresses too), canonical. */
  anyMac(): string | undefined {
    const t = this.next();
    const canonical = t.kind === 'word' ? canonicalMac(t.text) : undefined;
    if (canonical === undefined) return this.fail(t, `expected a MAC address like ${MAC_EXAMPLE}, got ${describeToken(t)}`);
    return canonical;
  }

  /** A dotted-quad IPv4 address; a bad one is reported. */
  ipv4(): string | undefined {
    const t = this.next();
    const m = t.kind === 'word' ? /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(t.text) : null;
    if (m === null) return this.fail(t, `expected an IPv4 address like 10.0.0.1, got ${describeToken(t)}`);
    if (m.slice(1).some((o) => Number(o) > 255)) {
      this.report(t, `expected an IPv4 address with octets 0..255, got ${t.text}`);
      return undefined;
    }
    return m.slice(1).map(Number).join('.');
  }

  /** `N`, `N,M`, and with `ranges` also `N-M` items, comma separated, in min..max; sorted and unique. */
  numberList(what: string, min: number, max: number, ranges: boolean): Located<number[]> | undefined {
    const t = this.next();
    const item = ranges ? '[0-9]+(-[0-9]+)?' : '[0-9]+';
    if (t.kind !== 'word' || !new RegExp(`^${item}(,${item})*$`).test(t.text)) {
      this.fail(t, `expected ${what} (${min}..${max}, comma separated${ranges ? ', N-M ranges allowed' : ''}), got ${describeToken(t)}`);
    }
    const out = new Set<number>();
    for (const part of t.text.split(',')) {
      const [a, b = a] = part.split('-').map(Number) as [number, number?];
      if (a < min || b! > max || a > b!) {
        this.report(t, `expected ${what} from ${min} to ${max}, got ${part}`);
        return undefined;
      }
      for (let v = a; v <= b!; v++) out.add(v);
    }
    return { value: [...out].sort((x, y) => x - y), pos: pos(t) };
  }

  /** A unicast MAC address, returned canonical; multicast and all-zero are reported. */
  mac(): Located<string> | undefined {
    const t = this.next();
    const canonical = t.kind === 'word' ? canonicalMac(t.text) : undefined;
    if (canonical === undefined) return this.fail(t, `expected a MAC address like ${MAC_EXAMPLE}, got ${describeToken(t)}`);
    if (parseInt(canonical.slice(0, 2), 16) & 1) {
      this.report(t, `expected a unicast MAC address, got multicast address ${canonical}`);
      return undefined;
    }
    if (canonical === '00:00:00:00:00:00') {
      this.report(t, `expected a unicast MAC address, got the all-zero address`);
      return undefined;
    }
    return { value: canonical, pos: pos(t) };
  }
}

/** "FE:e1:b:..." -> "fe:e1:0b:..."; undefined unless six 1-2 digit hex octets separated by ':'. */
export function canonicalMac(text: string): string | undefined {
  if (!/^[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}$/.test(text)) return undefined;
  return text
    .split(':')
    .map((o) => o.toLowerCase().padStart(2, '0'))
    .join(':');
}

/**
 * The address an interface without lladdr gets: fe:e1:ba + 3 bytes of SHA-256 over vm name, index and
 * attempt (attempt > 0 only to step around an address already in use). Stable across runs and hosts.
 */
export function generatedLladdr(vmName: string, index: number, attempt = 0): string {
  const h = createHash('sha256').update(`${vmName}\0${index}\0${attempt}`).digest();
  return `${GENERATED_MAC_PREFIX}:${[h[0]!, h[1]!, h[2]!].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
}

// ---------------------------------------------------------------------------------------------------
// Phase 2: raw tree -> validated model

/** Names end up in socket file names and QEMU ids: letters, digits, '.', '-', '_', starting with a letter. */
const NAME_RE = /^[A-Za-z][A-Za-z0-9._-]*$/;

function checkName(p: Parser, kind: string, name: Located<string>): void {
  if (!NAME_RE.test(name.value)) {
    p.report(name.pos, `expected a ${kind} name of letters, digits, ".", "-" or "_" starting with a letter, got ${JSON.stringify(name.value)}`);
  }
}

function validate(p: Parser, raw: RawConfig, file: string, baseDir: string, dbs: IdDatabases): Config {
  let socketDir = resolve(baseDir, DEFAULT_SOCKET_DIR);
  if (raw.socketDir) {
    if (raw.socketDir.value === '' || raw.socketDir.value.includes('\0')) {
      p.report(raw.socketDir.pos, 'expected a non-empty socket directory, got ""');
    } else {
      socketDir = resolve(baseDir, raw.socketDir.value);
    }
  }
  const daemon = validateDaemonSettings(p, raw, baseDir, socketDir, dbs);

  const switches: SwitchConfig[] = [];
  const switchByName = new Map<string, RawSwitch>();
  for (const sw of raw.switches) {
    checkName(p, 'switch', sw.name);
    const first = switchByName.get(sw.name.value);
    if (first) p.report(sw.name.pos, `duplicate switch ${JSON.stringify(sw.name.value)}, first defined at ${at(first.name.pos)}`);
    else switchByName.set(sw.name.value, sw);
    const sc: SwitchConfig = { name: sw.name.value, mtu: sw.mtu?.value ?? DEFAULT_MTU, pos: sw.pos };
    if (sw.maxAddr) sc.maxAddr = sw.maxAddr.value;
    if (sw.timeout) sc.timeout = sw.timeout.value;
    if (sw.poll) sc.poll = true;
    if (sw.vport) {
      if (!/^[A-Za-z][A-Za-z0-9_.-]{0,14}$/.test(sw.vport.value)) {
        p.report(sw.vport.pos, `expected an interface name of at most 15 characters (letters, digits, ".", "-", "_"), got ${JSON.stringify(sw.vport.value)}`);
      }
      sc.vport = sw.vport.value;
    }
    switches.push(sc);
  }

  const vms: VmConfig[] = [];
  const vmByName = new Map<string, RawVm>();
  const usedMacs = new Map<string, string>(); // canonical MAC -> who uses it (for messages)
  const needMac: InterfaceConfig[] = [];
  const portSwitch = new Map<string, string>(); // "<vm>.net<N>" -> switch name
  const servedImages = new Map<string, string>(); // "dev:ino" of an image -> the disk serving it
  for (const vm of raw.vms) {
    const vmName = vm.name.value;
    checkName(p, 'vm', vm.name);
    const first = vmByName.get(vmName);
    if (first) p.report(vm.name.pos, `duplicate vm ${JSON.stringify(vmName)}, first defined at ${at(first.name.pos)}`);
    else vmByName.set(vmName, vm);

    const interfaces = vm.interfaces.map((ri, index): InterfaceConfig => {
      const who = `vm ${JSON.stringify(vmName)} interface ${index} at ${at(ri.pos)}`;
      if (!ri.switchRef) {
        p.report(ri.brace, `expected switch "NAME" in the interface block (interface ${index} of vm ${JSON.stringify(vmName)} has no switch)`);
      } else if (!switchByName.has(ri.switchRef.value)) {
        const known = [...switchByName.keys()].map((n) => JSON.stringify(n)).join(', ');
        p.report(ri.switchRef.pos, `unknown switch ${JSON.stringify(ri.switchRef.value)}, expected ${known ? `one of: ${known}` : 'a switch defined with switch "NAME" { ... }'}`);
      }
      if (ri.lladdr) {
        const owner = usedMacs.get(ri.lladdr.value);
        if (owner) p.report(ri.lladdr.pos, `duplicate lladdr ${ri.lladdr.value}, already used by ${owner}`);
        else usedMacs.set(ri.lladdr.value, who);
      }
      const socketPath = resolve(socketDir, `${vmName}.net${index}.sock`);
      if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
        p.report(ri.pos, `expected a socket path of at most ${MAX_SOCKET_PATH_BYTES} bytes, got ${Buffer.byteLength(socketPath)} bytes (${socketPath}); use a shorter socket dir or vm name`);
      }
      const iface: InterfaceConfig = {
        index,
        switchName: ri.switchRef?.value ?? '',
        lladdr: ri.lladdr?.value ?? '',
        lladdrGenerated: !ri.lladdr,
        socketPath,
        pos: ri.pos,
      };
      if (ri.locked) iface.locked = true;
      if (ri.learn) iface.learn = ri.learn.value;
      if (ri.discover) iface.discover = ri.discover.value;
      if (ri.blockNonIp) iface.blockNonIp = ri.blockNonIp.value;
      if (ri.span) iface.span = true;
      if (ri.protected) iface.protected = ri.protected.value;
      if (ri.untagged) iface.untagged = ri.untagged.value;
      if (ri.tagged) iface.tagged = ri.tagged.value;
      if (ri.maxAddr) iface.maxAddr = ri.maxAddr.value;
      if (ri.span && ri.locked) p.report(ri.span.pos, 'a span port cannot be locked (it sends nothing)');
      if (ri.switchRef) portSwitch.set(`${vmName}.net${index}`, ri.switchRef.value);
      if (!ri.lladdr) needMac.push(iface);
      return iface;
    });
    const disks = vm.disks.map((rd, index) => validateDisk(p, rd, vmName, index, baseDir, socketDir, servedImages));
    const vc: VmConfig = { name: vmName, interfaces, pos: vm.pos };
    if (disks.length) vc.disks = disks;
    if (vm.owner) {
      const owner = validateOwner(p, vm.owner, 'an owner', dbs);
      if (owner) vc.owner = owner;
    }
    vms.push(vc);
  }

  // Switch statics and rules name ports "<vm>.net<N>" of vms defined anywhere in the file.
  const checkPort = (sw: SwitchConfig, port: Located<string>): boolean => {
    const on = portSwitch.get(port.value);
    if (on === undefined) {
      p.report(port.pos, `unknown port ${JSON.stringify(port.value)}, expected "<vm>.net<N>" of an interface on switch ${JSON.stringify(sw.name)}`);
      return false;
    }
    if (on !== sw.name) {
      p.report(port.pos, `port ${JSON.stringify(port.value)} is on switch ${JSON.stringify(on)}, not ${JSON.stringify(sw.name)}`);
      return false;
    }
    return true;
  };
  raw.switches.forEach((rs, i) => {
    const sc = switches[i]!;
    const seen = new Map<string, SourcePos>();
    const statics: StaticConfig[] = [];
    for (const st of rs.statics) {
      const first = seen.get(st.mac.value);
      if (first) p.report(st.mac.pos, `duplicate static ${st.mac.value}, already set at ${at(first)}`);
      else seen.set(st.mac.value, st.mac.pos);
      if (checkPort(sc, st.port)) statics.push({ mac: st.mac.value, port: st.port.value, pos: st.pos });
    }
    const rules: RuleConfig[] = [];
    for (const r of rs.rules) if (checkPort(sc, r.port)) rules.push({ ...r.rule, port: r.port.value, pos: r.pos });
    if (statics.length) sc.statics = statics;
    if (rules.length) sc.rules = rules;
  });

  // Generated addresses last, so they step around every configured one (and each other).
  for (const iface of needMac) {
    const vmName = vms.find((v) => v.interfaces.includes(iface))!.name;
    let attempt = 0;
    let mac = generatedLladdr(vmName, iface.index);
    while (usedMacs.has(mac)) mac = generatedLladdr(vmName, iface.index, ++attempt);
    usedMacs.set(mac, `vm ${JSON.stringify(vmName)} interface ${iface.index}`);
    iface.lladdr = mac;
  }

  return { file, socketDir, ...daemon, switches, vms };
}

/** `socket owner` or a vm's `owner`: "user", "user:group" or ":group", names resolved now (a typo is reported here). */
function validateOwner(p: Parser, o: Located<string>, what: string, dbs: IdDatabases): SocketOwner | undefined {
  const parts = splitOwner(o.value);
  if (parts === null) {
    p.report(o.pos, `expected ${what} like "user", "user:group" or ":group" (names or decimal ids), got ${JSON.stringify(o.value)}`);
    return undefined;
  }
  const owner: SocketOwner = { uid: -1, gid: -1 };
  for (const kind of ['user', 'group'] as const) {
    const name = parts[kind];
    if (name === undefined) continue;
    owner[kind] = name;
    const id = resolveId(kind, name, dbs);
    if (typeof id === 'string') p.report(o.pos, id);
    else if (kind === 'user') owner.uid = id;
    else owner.gid = id;
  }
  return owner;
}

/**
 * The daemon-wide settings: control socket (same sun_path limit as the vhost-user sockets; the default
 * `<socket dir>/vhostd.sock` is checked too, at `socket dir`), socket owner (names resolved now, so a typo is a
 * configuration error and not a failure at start), metrics address, log level. Only configured fields are set.
 */
function validateDaemonSettings(p: Parser, raw: RawConfig, baseDir: string, socketDir: string, dbs: IdDatabases): Partial<Config> {
  const out: Partial<Config> = {};
  let control = resolve(socketDir, 'vhostd.sock');
  let controlAt = raw.socketDir?.pos ?? { line: 1, col: 1 };
  if (raw.control) {
    controlAt = raw.control.pos;
    if (raw.control.value === '' || raw.control.value.includes('\0')) {
      p.report(raw.control.pos, 'expected a non-empty control socket path, got ""');
    } else {
      control = resolve(baseDir, raw.control.value);
      out.controlPath = control;
    }
  }
  if (Buffer.byteLength(control) > MAX_SOCKET_PATH_BYTES) {
    p.report(controlAt, `expected a control socket path of at most ${MAX_SOCKET_PATH_BYTES} bytes, got ${Buffer.byteLength(control)} bytes (${control}); use a shorter path`);
  }
  if (raw.owner) {
    const owner = validateOwner(p, raw.owner, 'a socket owner', dbs);
    if (owner) out.socketOwner = owner;
  }
  if (raw.metricsListen) {
    const l = parseListenAddress(raw.metricsListen.value);
    if (typeof l === 'string') p.report(raw.metricsListen.pos, l);
    else out.metricsListen = l;
  }
  if (raw.logLevel) out.logLevel = raw.logLevel.value;
  for (const d of raw.backingDirs ?? []) {
    if (d.value === '' || d.value.includes('\0')) {
      p.report(d.pos, 'expected a non-empty backing file directory, got ""');
      continue;
    }
    const dir = resolve(baseDir, d.value);
    let isDir = false;
    try {
      isDir = fs.statSync(dir).isDirectory();
    } catch {
      /* reported below */
    }
    if (!isDir) p.report(d.pos, `expected an existing directory for backing dir, but ${dir} is not one`);
    else if (!(out.backingDirs ??= []).includes(dir)) out.backingDirs.push(dir);
  }
  if (raw.maxGuestMemory) out.maxGuestMemory = raw.maxGuestMemory.value;
  return out;
}

/**
 * "ADDRESS:PORT" → { host, port }: a dotted-quad IPv4 address, a bracketed IPv6 address ("[::1]:9100", host
 * without brackets) or a host name; port 1..65535. Returns the error message when malformed.
 */
export function parseListenAddress(text: string): { host: string; port: number } | string {
  const bad = (why: string): string => `expected an address and port like "127.0.0.1:9100" or "[::1]:9100", got ${JSON.stringify(text)}: ${why}`;
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):([^:]*)$/.exec(text);
  if (m === null) return bad(text.split(':').length > 2 ? 'an IPv6 address goes in brackets' : 'no port');
  const [, v6, name, portText] = m;
  if (!/^[0-9]{1,5}$/.test(portText!) || Number(portText) < 1 || Number(portText) > 65535) return bad('the port must be a number from 1 to 65535');
  const port = Number(portText);
  if (v6 !== undefined) return isIPv6(v6) ? { host: v6, port } : bad(`${JSON.stringify(v6)} is not an IPv6 address`);
  const host = name!;
  if (/^[0-9.]+$/.test(host)) {
    const o = host.split('.');
    if (o.length !== 4 || o.some((x) => x === '' || x.length > 3 || Number(x) > 255)) return bad(`${JSON.stringify(host)} is not an IPv4 address`);
    return { host, port };
  }
  // RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, at most 253 characters.
  const label = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
  if (host === '' || host.length > 253 || !host.split('.').every((l) => label.test(l))) return bad(`${JSON.stringify(host)} is not a host name`);
  return { host, port };
}

const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb]; // "QFI\xfb"

/**
 * One disk: the image must exist, be a regular file or block device, be readable (and writable unless readonly),
 * and not be served by another disk (same device and inode, whatever the path); `format qcow2` needs the qcow2
 * magic. Errors point at the path (or the format keyword).
 */
function validateDisk(p: Parser, rd: RawDisk, vmName: string, index: number, baseDir: string, socketDir: string, served: Map<string, string>): DiskConfig {
  const socketPath = resolve(socketDir, `${vmName}.disk${index}.sock`);
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
    p.report(rd.pos, `expected a socket path of at most ${MAX_SOCKET_PATH_BYTES} bytes, got ${Buffer.byteLength(socketPath)} bytes (${socketPath}); use a shorter socket dir or vm name`);
  }
  const readOnly = rd.readOnly?.value ?? false;
  const disk: DiskConfig = { index, path: '', readOnly, socketPath, pos: rd.pos };
  if (rd.format) disk.format = rd.format.value;
  if (rd.cache) disk.cacheBytes = rd.cache.value;
  if (rd.path.value === '' || rd.path.value.includes('\0')) {
    p.report(rd.path.pos, 'expected a non-empty image path, got ""');
    return disk;
  }
  const path = resolve(baseDir, rd.path.value);
  disk.path = path;
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    p.report(rd.path.pos, `cannot use image ${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message}`);
    return disk;
  }
  if (!st.isFile() && !st.isBlockDevice()) {
    p.report(rd.path.pos, `expected a disk image (a regular file or a block device), but ${path} is ${st.isDirectory() ? 'a directory' : 'not a regular file'}`);
    return disk;
  }
  let fd = -1;
  try {
    fd = fs.openSync(path, readOnly ? 'r' : 'r+');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? (readOnly ? 'not readable' : 'not readable and writable (add readonly to serve it read-only)') : (err as Error).message;
    p.report(rd.path.pos, `cannot use image ${path}: ${why}`);
    return disk;
  }
  try {
    if (rd.format?.value === 'qcow2') {
      const magic = Buffer.alloc(4);
      const n = fs.readSync(fd, magic, 0, 4, 0);
      if (n !== 4 || QCOW2_MAGIC.some((b, i) => magic[i] !== b)) p.report(rd.format.pos, `format qcow2, but ${path} has no qcow2 header (use format raw or no format)`);
    }
  } finally {
    fs.closeSync(fd);
  }
  const key = `${st.dev}:${st.ino}`;
  const owner = served.get(key);
  if (owner) p.report(rd.path.pos, `image ${path} is already served by ${owner}`);
  else served.set(key, `vm ${JSON.stringify(vmName)} disk ${index} at ${at(rd.pos)}`);
  return disk;
}

// ---------------------------------------------------------------------------------------------------

/**
 * Parse and validate a configuration. `file` names the text in messages (`file:line:col: ...`).
 * Throws ConfigError (a VhostError, code ERR_CONFIG) listing every error found.
 */
export function parseConfig(text: string, file: string, opts: ParseOptions = {}): Config {
  const p = new Parser(tokenize(text, file), file);
  const raw: RawConfig = { switches: [], vms: [] };
  p.statements(TOP, raw, 'top level');
  const cfg = validate(p, raw, file, opts.baseDir ?? dirname(resolve(file)), opts.idDatabases ?? SYSTEM_ID_DATABASES);
  if (p.diagnostics.length > 0) throw new ConfigError(p.diagnostics);
  return cfg;
}
