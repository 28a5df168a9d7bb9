/* SIGBUS guard for registered guest-memory mappings (sigbus.c). */
#ifndef VHOSTD_SIGBUS_H
#define VHOSTD_SIGBUS_H
#include <stddef.h>
#include <stdint.h>

/* Mappings the guard can hold; copy.h sizes its handle table from it (a slot index is a copy handle's slot). */
#define SIGBUS_SLOTS 65536

/* Install the process-wide handler once; 0 if sigaction failed. */
int sigbus_guard_ready(void);
/* Register [base, base+len); returns the slot, or -1 when the table is full or the guard is not installed. */
int sigbus_register(void *base, size_t len);
/* Forget a slot (before munmap). */
void sigbus_unregister(int slot);
/* SIGBUS faults counted in a slot since it was registered. */
uint32_t sigbus_slot_faults(int slot);
#endif
