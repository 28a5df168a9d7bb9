/*
 * Frame copies between guest mappings, one N-API call per burst (copyBurst). TypeScript decides every copy and has
 * already checked it against its own region table; C checks each op again before the memmove, so a TypeScript bug
 * or a handle kept past its mapping's munmap can never write outside a live mapping of the calling thread.
 * Handles carry a generation: munmap moves the slot's generation on, so a stale handle never names the next mapping
 * that reuses the slot (another guest's memory). No policy here: a refused op is skipped and counted.
 */
#include "copy.h"

#include <stdatomic.h>
#include <string.h>

copy_table_t copy_table;

double copy_map(copy_table_t *t, int slot, void *data, size_t len, const void *owner) {
  if (slot < 0 || slot >= COPY_SLOTS) return -1;
  copy_slot_t *s = &t->slots[slot];
  uint64_t gen = atomic_load_explicit(&s->tag, memory_order_relaxed) >> 1;
  if (gen > COPY_MAX_GEN) return -1; /* used up: the slot hands out no more handles */
  s->data = data;
  s->len = len;
  atomic_store_explicit(&s->owner, (uintptr_t)owner, memory_order_relaxed);
  atomic_store_explicit(&s->tag, gen << 1 | 1, memory_order_release);
  return (double)gen * COPY_SLOTS + slot;
}

void copy_unmap(copy_table_t *t, int slot) {
  if (slot < 0 || slot >= COPY_SLOTS) return;
  copy_slot_t *s = &t->slots[slot];
  uint64_t tag = atomic_load_explicit(&s->tag, memory_order_relaxed);
  if (!(tag & 1)) return;
  atomic_store_explicit(&s->tag, ((tag >> 1) + 1) << 1, memory_order_release);
}

/* An integer in [0, max] held in a double (NaN, infinities, fractions and negatives fail). */
static int as_index(double v, double max, uint64_t *out) {
  if (!(v >= 0 && v <= max)) return 0;
  uint64_t u = (uint64_t)v;
  if ((double)u != v) return 0;
  *out = u;
  return 1;
}

/* The bytes [off, off+len) of the mapping `h` names for `owner`, or NULL. */
static uint8_t *resolve(copy_table_t *t, double h, double off, uint64_t len, const void *owner) {
  uint64_t hv, o;
  if (!as_index(h, (double)(COPY_MAX_GEN * COPY_SLOTS + (COPY_SLOTS - 1)), &hv)) return NULL;
  copy_slot_t *s = &t->slots[hv % COPY_SLOTS];
  uint64_t tag = atomic_load_explicit(&s->tag, memory_order_acquire);
  if (tag != ((hv / COPY_SLOTS) << 1 | 1)) return NULL; /* unmapped, or a later mapping in the slot */
  if (atomic_load_explicit(&s->owner, memory_order_relaxed) != (uintptr_t)owner) return NULL;
  if (!as_index(off, (double)s->len, &o) || len > s->len - o) return NULL;
  return s->data + o;
}

uint32_t copy_run(copy_table_t *t, const double *ops, uint32_t n, const void *owner) {
  uint32_t refused = 0;
  for (uint32_t i = 0; i < n; i++) {
    const double *op = ops + (size_t)i * COPY_OP_FIELDS;
    uint64_t len;
    uint8_t *dst, *src;
    if (!as_index(op[4], COPY_MAX_LEN, &len) || len == 0 || !(dst = resolve(t, op[0], op[1], len, owner)) ||
        !(src = resolve(t, op[2], op[3], len, owner))) {
      refused++;
      continue;
    }
    /* memmove: a guest with two devices on one switch may hand overlapping TX and RX buffers of the same memory. */
    memmove(dst, src, (size_t)len);
  }
  return refused;
}
