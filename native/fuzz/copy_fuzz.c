/*
 * libFuzzer target for copy_run (native/copy.c), the op checks in front of every memmove of copyBurst.
 * The input picks up to four mappings (heap blocks of exactly their size, so AddressSanitizer sees any access past
 * one) in states a handle can meet: live, unmapped (stale handle), owned by another thread, remapped (the old
 * handle is stale, the new one current), generations used up (no handle), the last generation; then up to 64 ops
 * whose fields are raw doubles (NaN, infinities, fractions, huge) or values near the interesting bounds.
 * Contract checked against an independent model: an op runs (as memmove, in order) exactly when both handles are
 * current and ours, offsets and length are integers, 1 <= len <= COPY_MAX_LEN and both ranges lie in their
 * mappings; the return value counts the others; no byte outside the copies changes; no read or write outside the
 * blocks; no undefined behaviour.
 * Built by native/fuzz/build.sh; the same file is the valgrind driver when built with -DCOPY_DRIVER.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../copy.h"

#define MAX_REGIONS 4
#define MAX_OPS 64
#define MAX_SIZE 4096

static copy_table_t table;
static const int me = 1, other = 2;

typedef struct {
  uint8_t *data;   /* what copy_run writes */
  uint8_t *shadow; /* what the model says it must hold */
  size_t size;
  double current;  /* the handle that must work, -1 if none */
  double old;      /* a handle that must not work (stale), -1 if none */
  int ours;
} region_t;

typedef struct {
  const uint8_t *p;
  size_t left;
} input_t;

static uint8_t take(input_t *in) {
  if (in->left == 0) return 0;
  in->left--;
  return *in->p++;
}

static uint64_t take64(input_t *in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)take(in) << (8 * i);
  return v;
}

/* One op field. kind: 0 handle, 1 offset, 2 length. */
static double field(input_t *in, const region_t *rs, int n, int kind) {
  uint8_t tag = take(in);
  uint64_t raw = take64(in);
  const region_t *r = &rs[(raw & 0xff) % n];
  switch (tag % 6) {
    case 0: {
      double d;
      memcpy(&d, &raw, sizeof(d));
      return d;
    }
    case 1:
      return (double)(raw % 8192);
    case 2:
      if (kind == 0) return r->current;
      return (double)r->size - (double)((raw >> 8) % 8);
    case 3:
      if (kind == 0) return r->old;
      return -(double)((raw >> 8) % 4) - ((raw >> 16) & 1 ? 0.5 : 0);
    case 4:
      return (double)raw;
    default:
      if (kind == 2) return (double)COPY_MAX_LEN + (double)((raw >> 8) % 3) - 1;
      return r->current + (double)((raw >> 8) % 3) - 1; /* neighbours of a handle (other slot or generation) */
  }
}

/* The model's view of one (handle, offset, len): the region it names, or NULL when the op must be refused. */
static region_t *model_resolve(region_t *rs, int n, double h, double off, double len) {
  if (h < 0) return NULL;
  for (int i = 0; i < n; i++) {
    region_t *r = &rs[i];
    if (r->current < 0 || h != r->current || !r->ours) continue;
    if (!(off >= 0 && off <= (double)r->size) || off != (double)(uint64_t)off || off + len > (double)r->size) return NULL;
    return r;
  }
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  input_t in = {data, size};
  int n = 1 + take(&in) % MAX_REGIONS;
  region_t rs[MAX_REGIONS];
  memset(rs, 0, sizeof(rs));
  for (int i = 0; i < n; i++) {
    region_t *r = &rs[i];
    r->size = 1 + (take(&in) | (size_t)take(&in) << 8) % MAX_SIZE;
    r->data = malloc(r->size);
    r->shadow = malloc(r->size);
    if (!r->data || !r->shadow) abort();
    for (size_t k = 0; k < r->size; k++) r->data[k] = r->shadow[k] = (uint8_t)(k * 7 + i * 31);
    memset(&table.slots[i], 0, sizeof(table.slots[i]));
    uint8_t state = take(&in) % 6;
    r->ours = state != 2;
    r->old = -1;
    if (state == 4) atomic_store(&table.slots[i].tag, (COPY_MAX_GEN + 1) << 1); /* generations used up */
    if (state == 5) atomic_store(&table.slots[i].tag, COPY_MAX_GEN << 1);       /* the last one */
    r->current = copy_map(&table, i, r->data, r->size, r->ours ? &me : &other);
    if (state == 4 && r->current != -1) abort();
    if (state != 4 && r->current != (double)(atomic_load(&table.slots[i].tag) >> 1) * COPY_SLOTS + i) abort();
    if (state == 1) { /* unmapped: its handle is stale */
      copy_unmap(&table, i);
      r->old = r->current;
      r->current = -1;
    }
    if (state == 3) { /* remapped: the first handle is stale, the second current */
      r->old = r->current;
      copy_unmap(&table, i);
      r->current = copy_map(&table, i, r->data, r->size, &me);
      if (r->current == r->old) abort();
    }
  }
  double ops[MAX_OPS * COPY_OP_FIELDS];
  uint32_t nops = 0, want_refused = 0;
  while (in.left > 0 && nops < MAX_OPS) {
    double *op = &ops[nops * COPY_OP_FIELDS];
    op[0] = field(&in, rs, n, 0);
    op[1] = field(&in, rs, n, 1);
    op[2] = field(&in, rs, n, 0);
    op[3] = field(&in, rs, n, 1);
    op[4] = field(&in, rs, n, 2);
    nops++;
    double len = op[4];
    region_t *d = NULL, *s = NULL;
    if (len >= 1 && len <= COPY_MAX_LEN && len == (double)(uint64_t)len) {
      d = model_resolve(rs, n, op[0], op[1], len);
      s = model_resolve(rs, n, op[2], op[3], len);
    }
    if (!d || !s) {
      want_refused++;
      continue;
    }
    memmove(d->shadow + (size_t)op[1], s->shadow + (size_t)op[3], (size_t)len);
  }
  uint32_t refused = copy_run(&table, ops, nops, &me);
  if (refused != want_refused) {
    fprintf(stderr, "copy_run refused %u of %u ops, the model %u\n", refused, nops, want_refused);
    abort();
  }
  for (int i = 0; i < n; i++) {
    if (memcmp(rs[i].data, rs[i].shadow, rs[i].size) != 0) {
      fprintf(stderr, "mapping %d differs from the model after copy_run\n", i);
      abort();
    }
    copy_unmap(&table, i);
    free(rs[i].data);
    free(rs[i].shadow);
  }
  return 0;
}

#ifdef COPY_DRIVER
#define FUZZ_NAME "copy"
#include "replay_main.h"
#endif
