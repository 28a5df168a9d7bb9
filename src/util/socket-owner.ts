/**
 * `socket owner [user][:group]`: every socket vhostd creates (the control socket and each vhost-user
 * socket) gets mode 0660 and, when configured, that owner, as vm.conf's `socket owner` does for vmd's control
 * socket. Connecting to a Unix socket needs write permission on it, so a user outside the group is refused.
 */
import fs from 'node:fs';

export const SOCKET_MODE = 0o660;

/** The resolved ids of config's SocketOwner (-1 = unchanged); structural, so util/ need not import config/. */
export interface SocketIds {
  uid: number;
  gid: number;
}

export function applySocketOwner(path: string, owner: SocketIds | undefined): void {
  fs.chmodSync(path, SOCKET_MODE);
  if (owner && (owner.uid !== -1 || owner.gid !== -1)) fs.chownSync(path, owner.uid, owner.gid);
}
