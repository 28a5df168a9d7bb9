/*
 * SIGBUS guard for shared guest memory. A front-end keeps its own fd of every memory region, log and inflight
 * area it sends, so it can ftruncate the file after vhostd checked its size, and a sparse file on a full tmpfs or
 * hugetlbfs fails the first touch of a hole: either way the kernel raises SIGBUS at a plain load or store, which
 * would kill the whole daemon. Every mmapShared() mapping is registered here; a SIGBUS inside one replaces the
 * faulting page with a private zero page (the access then completes) and counts the fault on that mapping. The
 * TypeScript side reads the counts (guestFaults, mappingFaults) and drops the connection that owns the mapping.
 * A SIGBUS outside any registered mapping goes to the previous handler (by default: the process dies).
 *
 * Signal-handler rules: the handler only reads the slot table (atomics), calls mmap and increments counters.
 * Slots are claimed and freed under a mutex by the threads that map (the main thread, or a worker in tests).
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "sigbus.h"

#define SLOTS SIGBUS_SLOTS

typedef struct {
  _Atomic uintptr_t start; /* 0: free */
  _Atomic uintptr_t end;
  _Atomic uint32_t faults;
} slot_t;

static slot_t slots[SLOTS];
static _Atomic uint64_t total_faults;
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static struct sigaction previous;
static int installed;
/* Read once at install: sysconf is not async-signal-safe. */
static uintptr_t page_size;

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
  uintptr_t a = (uintptr_t)si->si_addr;
  for (int i = 0; i < SLOTS; i++) {
    uintptr_t s = atomic_load_explicit(&slots[i].start, memory_order_acquire);
    if (s == 0 || a < s || a >= atomic_load_explicit(&slots[i].end, memory_order_relaxed)) continue;
    uintptr_t page = a & ~(page_size - 1);
    if (mmap((void *)page, page_size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
      break;
    atomic_fetch_add_explicit(&slots[i].faults, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&total_faults, 1, memory_order_release);
    return;
  }
  /* Not guest memory: whatever handled SIGBUS before us (default: terminate with a core). */
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction) previous.sa_sigaction(sig, si, uc);
    return;
  }
  if (previous.sa_handler == SIG_IGN) return;
  if (previous.sa_handler != SIG_DFL && previous.sa_handler) {
    previous.sa_handler(sig);
    return;
  }
  signal(SIGBUS, SIG_DFL); /* returning re-executes the access, which now kills the process as it would have */
}

static void install(void) {
  page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  installed = sigaction(SIGBUS, &sa, &previous) == 0;
}

int sigbus_guard_ready(void) {
  pthread_once(&install_once, install);
  return installed;
}

int sigbus_register(void *base, size_t len) {
  if (!sigbus_guard_ready()) return -1;
  int found = -1;
  pthread_mutex_lock(&slots_lock);
  for (int i = 0; i < SLOTS; i++) {
    if (atomic_load_explicit(&slots[i].start, memory_order_relaxed) != 0) continue;
    atomic_store_explicit(&slots[i].faults, 0, memory_order_relaxed);
    atomic_store_explicit(&slots[i].end, (uintptr_t)base + len, memory_order_relaxed);
    atomic_store_explicit(&slots[i].start, (uintptr_t)base, memory_order_release);
    found = i;
    break;
  }
  pthread_mutex_unlock(&slots_lock);
  return found;
}

void sigbus_unregister(int slot) {
  if (slot < 0 || slot >= SLOTS) return;
  pthread_mutex_lock(&slots_lock);
  atomic_store_explicit(&slots[slot].start, 0, memory_order_release);
  pthread_mutex_unlock(&slots_lock);
}

uint32_t sigbus_slot_faults(int slot) {
  if (slot < 0 || slot >= SLOTS) return 0;
  return atomic_load_explicit(&slots[slot].faults, memory_order_relaxed);
}

napi_value sigbus_guest_faults(napi_env env, napi_callback_info info) {
  UNUSED(info);
  return make_number(env, (double)atomic_load_explicit(&total_faults, memory_order_acquire));
}
