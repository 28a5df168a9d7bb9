/**
 * `socket owner [user][:group]` (vm.conf(5) `socket owner`): the spec as written → numeric ids, resolved once at
 * parse time from /etc/passwd and /etc/group (the files getpwnam(3)/getgrnam(3) read on a host without NSS
 * modules; Node has no getpwnam). A decimal id is taken as is, so hosts with LDAP users can still use ids.
 */
import fs from 'node:fs';

/** Where names are looked up; tests point these at their own files. */
export interface IdDatabases {
  passwd: string;
  group: string;
}

/** The host's own databases. */
export const SYSTEM_ID_DATABASES: IdDatabases = { passwd: '/etc/passwd', group: '/etc/group' };

/** Split "user:group" / "user" / ":group"; undefined parts are absent. Null when both are empty or a part is malformed. */
export function splitOwner(spec: string): { user?: string; group?: string } | null {
  const colon = spec.indexOf(':');
  const user = colon < 0 ? spec : spec.slice(0, colon);
  const group = colon < 0 ? '' : spec.slice(colon + 1);
  // Names as useradd(8) accepts them, plus decimal ids; no second ':'.
  const ok = (s: string): boolean => /^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$/.test(s);
  if ((user === '' && group === '') || (user !== '' && !ok(user)) || (group !== '' && !ok(group))) return null;
  const out: { user?: string; group?: string } = {};
  if (user !== '') out.user = user;
  if (group !== '') out.group = group;
  return out;
}

/** The id of `name` in a passwd- or group-format text (name:x:id:...), or undefined. */
export function lookupId(text: string, name: string): number | undefined {
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && f[0] === name && /^[0-9]+$/.test(f[2]!)) return Number(f[2]);
  }
  return undefined;
}

/**
 * Resolve a user or group name (or a decimal id) to its id. Returns a message naming what is missing when it
 * cannot be resolved.
 */
export function resolveId(kind: 'user' | 'group', name: string, dbs: IdDatabases = SYSTEM_ID_DATABASES): number | string {
  if (/^[0-9]+$/.test(name)) {
    const id = Number(name);
    return id <= 0xfffffffe ? id : `expected a ${kind} id below 4294967295, got ${name}`;
  }
  const file = kind === 'user' ? dbs.passwd : dbs.group;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    return `cannot look up ${kind} ${JSON.stringify(name)}: ${file}: ${(err as Error).message}`;
  }
  const id = lookupId(text, name);
  return id ?? `unknown ${kind} ${JSON.stringify(name)} (not in ${file})`;
}
