/**
 * ImageError: failures of image formats. Callers branch on `kind`, never on the message text.
 * - Io: the host file failed (read, write, sync).
 * - InvalidFormat: not a valid image (bad magic, bad header field, bad backing file).
 * - UnsupportedFeature: a valid image using a feature vhostd does not implement (named in the message).
 * - CorruptImage: metadata points where it must not (past EOF, into other metadata, refcount overflow).
 * - OutOfBounds: a request outside the virtual disk.
 * - ReadOnly: a write to an image opened read-only.
 * - Refused: the image policy refuses it (a backing file outside the allowed directories, not a regular file, of
 *   unstated format; a write that would change a probed format; more snapshot metadata than is read at open).
 */
export type ImageErrorKind = 'Io' | 'InvalidFormat' | 'UnsupportedFeature' | 'CorruptImage' | 'OutOfBounds' | 'ReadOnly' | 'Refused';

export interface ImageErrorContext {
  path?: string;
  /** Guest or host offset involved, when there is one. */
  offset?: number;
  op?: string;
  /** The unsupported feature, for UnsupportedFeature. */
  feature?: string;
  /** The backing file involved (as named in the image, or resolved), for backing-chain errors. */
  backing?: string;
}

export class ImageError extends Error {
  readonly code = 'ERR_IMAGE';
  readonly kind: ImageErrorKind;
  readonly context: ImageErrorContext;
  constructor(kind: ImageErrorKind, message: string, context: ImageErrorContext = {}, options?: { cause?: unknown }) {
    super(context.path ? `${context.path}: ${message}` : message, options);
    this.name = 'ImageError';
    this.kind = kind;
    this.context = context;
  }
}
