/**
 * Lexer for the vm.conf-style configuration: words, double-quoted strings (\" and \\ escapes),
 * `{`, `}`, end-of-statement (newline or `;`) and end of file, each with a 1-based line/col.
 * `#` starts a comment to the end of the line. Also home of ConfigError, the one error type the
 * configuration code throws (a VhostError with code ERR_CONFIG and `file:line:col: ...` lines).
 */
import { VhostError } from '../util/errors.js';
import type { SourcePos } from './model.js';

export type TokenKind = 'word' | 'string' | '{' | '}' | 'eol' | 'eof';

export interface Token extends SourcePos {
  kind: TokenKind;
  /** word: as written; string: the decoded value; eol: "\n" or ";"; braces: the brace; eof: "". */
  text: string;
}

export interface Diagnostic extends SourcePos {
  file: string;
  /** Without the position prefix, e.g. `expected a number, got "x"`. */
  message: string;
}

export function formatDiagnostic(d: Diagnostic): string {
  return `${d.file}:${d.line}:${d.col}: ${d.message}`;
}

/** One or more configuration errors, sorted by position; the message is one formatted line per error. */
export class ConfigError extends VhostError {
  readonly diagnostics: readonly Diagnostic[];
  constructor(diagnostics: Diagnostic[]) {
    const sorted = [...diagnostics].sort((a, b) => a.line - b.line || a.col - b.col);
    super('ERR_CONFIG', sorted.map(formatDiagnostic).join('\n'));
    this.name = 'ConfigError';
    this.diagnostics = sorted;
  }
}

/** How a token reads in "got ..." messages. */
export function describeToken(t: Token): string {
  switch (t.kind) {
    case 'word':
      return JSON.stringify(t.text);
    case 'string':
      return `string ${JSON.stringify(t.text)}`;
    case 'eol':
      return t.text === ';' ? '";"' : 'end of line';
    case 'eof':
      return 'end of file';
    default:
      return `"${t.text}"`;
  }
}

const isSpace = (c: string): boolean => c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v';
/** Characters that end a word (besides white space). */
const isDelimiter = (c: string): boolean => c === '{' || c === '}' || c === ';' || c === '"' || c === '#' || c === '\n';

export function tokenize(text: string, file: string): Token[] {
  const tokens: Token[] = [];
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0; // tolerate a UTF-8 byte order mark
  let line = 1;
  let lineStart = i;
  const fail = (atLine: number, atCol: number, message: string): never => {
    throw new ConfigError([{ file, line: atLine, col: atCol, message }]);
  };

  while (i < text.length) {
    const c = text[i]!;
    const col = i - lineStart + 1;
    if (isSpace(c)) {
      i++;
    } else if (c === '#') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === '\n') {
      tokens.push({ kind: 'eol', text: '\n', line, col });
      i++;
      line++;
      lineStart = i;
    } else if (c === ';') {
      tokens.push({ kind: 'eol', text: ';', line, col });
      i++;
    } else if (c === '{' || c === '}') {
      tokens.push({ kind: c, text: c, line, col });
      i++;
    } else if (c === '"') {
      let value = '';
      i++;
      for (;;) {
        if (i >= text.length || text[i] === '\n') fail(line, col, 'unterminated string, expected a closing " on the same line');
        const d = text[i]!;
        if (d === '"') {
          i++;
          break;
        }
        if (d === '\\') {
          const e = text[i + 1];
          if (e !== '"' && e !== '\\') {
            const shown = e === undefined || e === '\n' ? '\\' : `\\${e}`;
            fail(line, i - lineStart + 1, `invalid escape ${JSON.stringify(shown)} in string, expected \\" or \\\\`);
          }
          value += e;
          i += 2;
          continue;
        }
        if (d.charCodeAt(0) < 0x20 && d !== '\t') fail(line, i - lineStart + 1, 'control character in string');
        value += d;
        i++;
      }
      tokens.push({ kind: 'string', text: value, line, col });
    } else if (c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f) {
      fail(line, col, `unexpected control character 0x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
    } else {
      const start = i;
      while (i < text.length && !isSpace(text[i]!) && !isDelimiter(text[i]!) && text.charCodeAt(i) >= 0x20) i++;
      tokens.push({ kind: 'word', text: text.slice(start, i), line, col });
    }
  }
  tokens.push({ kind: 'eof', text: '', line, col: i - lineStart + 1 });
  return tokens;
}
