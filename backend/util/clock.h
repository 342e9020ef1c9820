/*
 * clock.h - the daemon's two clocks, in milliseconds.
 *
 * dl_now_ms() is the wall clock (what other hosts and the backend's
 * records speak: enqueue times, "since"); dl_mono_ms() is the monotonic
 * clock every deadline of this process runs on (leases, timeouts,
 * backoffs).  Both are thread-safe and take no lock.
 */
#ifndef DL_CLOCK_H
#define DL_CLOCK_H

#include <stdint.h>

int64_t dl_now_ms(void);
int64_t dl_mono_ms(void);
/* the monotonic clock in ns, for measuring durations (the metrics) */
int64_t dl_mono_ns(void);

#endif /* DL_CLOCK_H */
