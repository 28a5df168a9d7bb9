/* Guest-to-guest copies in bursts (copy.c): a table of mapping handles and the checked op runner. */
#ifndef VHOST_NATIVE_COPY_H
#define VHOST_NATIVE_COPY_H

#include <stddef.h>
#include <stdint.h>

/* One slot per mapping; the index is the mapping's SIGBUS guard slot (sigbus.h), so the tables are the same size. */
#define COPY_SLOTS 65536
/* Doubles per op: dst handle, dst offset, src handle, src offset, length. */
#define COPY_OP_FIELDS 5
/* Longest single op: a 64 KiB frame plus its header fits, an absurd length from a TypeScript bug does not. */
#define COPY_MAX_LEN (256u * 1024u)
/* A handle is generation * COPY_SLOTS + slot, an integer below 2^53 (exact as a JS number). */
#define COPY_MAX_GEN ((UINT64_C(1) << 37) - 1)

typedef struct {
  /* generation << 1 | live. Stored last (release) by copy_map, first (release) by copy_unmap. */
  _Atomic uint64_t tag;
  /* Who may copy through the slot (the thread's napi_env); another thread's handle is refused. */
  _Atomic uintptr_t owner;
  uint8_t *data;
  size_t len;
} copy_slot_t;

typedef struct {
  copy_slot_t slots[COPY_SLOTS];
} copy_table_t;

/* The process-wide table the addon uses. */
extern copy_table_t copy_table;

/* Make `slot` name [data, data+len) for `owner`. Returns the handle (>= 0), or -1 when the slot is out of range or
 * its generations are used up (the mapping then simply has no handle: callers copy it another way). */
double copy_map(copy_table_t *t, int slot, void *data, size_t len, const void *owner);
/* Forget the slot and move its generation on, so every handle given out for it is stale from now on. */
void copy_unmap(copy_table_t *t, int slot);
/* Run n ops (COPY_OP_FIELDS doubles each) for `owner`: each op whose handles are live, current and owned by `owner`,
 * whose offsets and length are integers with off + len inside both mappings and 1 <= len <= COPY_MAX_LEN, is a
 * memmove; any other op is skipped. Returns the number skipped. */
uint32_t copy_run(copy_table_t *t, const double *ops, uint32_t n, const void *owner);

#endif
