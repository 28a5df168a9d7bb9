/** Lexer: token kinds, positions, strings and escapes, comments, statement ends, lexical errors. */
import { describe, expect, it } from 'vitest';
import { ConfigError, tokenize } from '../../../src/config/lexer.js';
import { VhostError } from '../../../src/util/errors.js';

const kinds = (text: string) => tokenize(text, 't.conf').map((t) => `${t.kind}:${t.text}@${t.line}:${t.col}`);

describe('tokenize', () => {
  it('emits words, strings, braces and statement ends with 1-based positions', () => {
    expect(kinds('vm "a b" {\n  mtu 1500; }\n')).toEqual([
      'word:vm@1:1',
      'string:a b@1:4',
      '{:{@1:10',
      'eol:\n@1:11',
      'word:mtu@2:3',
      'word:1500@2:7',
      'eol:;@2:11',
      '}:}@2:13',
      'eol:\n@2:14',
      'eof:@3:1',
    ]);
  });

  it('drops comments up to the end of the line but keeps the newline', () => {
    expect(kinds('a # b "c" {\nd')).toEqual(['word:a@1:1', 'eol:\n@1:12', 'word:d@2:1', 'eof:@2:2']);
  });

  it('ends a word at braces, quotes, ; and #', () => {
    expect(kinds('x{y}z;w#c').map((s) => s.split('@')[0])).toEqual(['word:x', '{:{', 'word:y', '}:}', 'word:z', 'eol:;', 'word:w', 'eof:']);
  });

  it('keeps MAC addresses and numbers as single words', () => {
    expect(kinds('lladdr fe:e1:bb:f1:c8:01 1500').slice(0, 3)).toEqual(['word:lladdr@1:1', 'word:fe:e1:bb:f1:c8:01@1:8', 'word:1500@1:26']);
  });

  it('decodes \\" and \\\\ escapes', () => {
    expect(tokenize(String.raw`"a\"b\\c"`, 't')[0]!.text).toBe('a"b\\c');
  });

  it('tolerates CRLF line ends and a byte order mark', () => {
    expect(kinds('\ufeffa\r\nb')).toEqual(['word:a@1:1', 'eol:\n@1:3', 'word:b@2:1', 'eof:@2:2']);
  });

  it('rejects an unterminated string at its opening quote', () => {
    expect(() => tokenize('x\n  "abc\n', 't.conf')).toThrow('t.conf:2:3: unterminated string, expected a closing " on the same line');
  });

  it('rejects an unknown escape at the backslash', () => {
    expect(() => tokenize(String.raw`"ab\n"`, 't.conf')).toThrow(String.raw`t.conf:1:4: invalid escape "\\n" in string, expected \" or \\`);
  });

  it('throws a ConfigError that is a VhostError with code ERR_CONFIG', () => {
    try {
      tokenize('"', 'f');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect(err).toBeInstanceOf(VhostError);
      expect((err as VhostError).code).toBe('ERR_CONFIG');
      expect((err as ConfigError).diagnostics).toEqual([{ file: 'f', line: 1, col: 1, message: expect.stringContaining('unterminated') }]);
    }
  });
});
