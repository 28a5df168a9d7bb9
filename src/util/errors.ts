/**
 * One error class with stable codes. Callers branch on `code`, never on message text.
 * Codes are grouped by layer: ERR_NATIVE_*, ERR_MEM_*, ERR_VQ_*, ERR_VU_*, ERR_NET_*, ERR_CONFIG_*.
 */
export type VhostErrorCode =
  | 'ERR_MEM_OVERLAP'
  | 'ERR_MEM_RANGE'
  | 'ERR_MEM_MAP'
  | 'ERR_VQ_RING_ADDR'
  | 'ERR_VQ_SIZE'
  | 'ERR_VU_BAD_HEADER'
  | 'ERR_VU_BAD_SIZE'
  | 'ERR_VU_BAD_FDS'
  | 'ERR_VU_BAD_PAYLOAD'
  | 'ERR_VU_BAD_VRING'
  | 'ERR_VU_PROTOCOL'
  | 'ERR_CONFIG'
  | 'ERR_NATIVE_LOAD';

export class VhostError extends Error {
  readonly code: VhostErrorCode;
  constructor(code: VhostErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VhostError';
    this.code = code;
  }
}

/** Errors that end one frontend connection (docs/architecture.md §6); the socket then accepts again. */
export function isConnectionFatal(err: unknown): boolean {
  return err instanceof VhostError && (err.code.startsWith('ERR_VU_') || err.code.startsWith('ERR_MEM_') || err.code.startsWith('ERR_VQ_'));
}
