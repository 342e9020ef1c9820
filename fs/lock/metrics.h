/*
 * metrics.h - what the lock manager counts for Prometheus (issue 13).
 *
 * Counters and histograms are process-wide atomics (a daemon has one lock
 * manager; the unit tests' several managers share them, which is harmless):
 * counting never takes a lock and never allocates.  lockmgr_metrics()
 * (lockmgr.h) renders them, with the manager's gauges, in the Prometheus
 * text format; the HTTP endpoint (fs/metrics_http.c) and the control
 * socket (dlockctl metrics) both serve that text.
 *
 * Private to fs/lock/ except lm_metrics_table(), through which a front-end
 * registers a counter table of its own (the FUSE requests by opcode).
 */
#ifndef DL_LM_METRICS_H
#define DL_LM_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/util/clock.h"

/* the backend calls the lock manager times */
enum lm_m_op {
	LM_OP_LOCK,
	LM_OP_UNLOCK,
	LM_OP_RELEASE,
	LM_OP_CANCEL,
	LM_OP_GETLK,
	LM_OP_LIST,
	LM_OP_N
};

enum lm_m_kind {
	LM_KIND_LOCK,	 /* a blocking lock (F_SETLKW, flock without NB) */
	LM_KIND_TRYLOCK, /* F_SETLK, LOCK_NB */
	LM_KIND_UNLOCK,
	LM_KIND_GETLK,
	LM_KIND_N
};

/* why a lock was lost */
enum lm_m_lost {
	LM_LOST_LEASE,	/* the lease ran out or the store forgot it */
	LM_LOST_BROKEN, /* an administrator broke it */
	LM_LOST_UNLOCK, /* an unlock the store could not confirm */
	LM_LOST_OTHER,
	LM_LOST_N
};

/* a backend call of @op took @ns */
void lm_metrics_backend(enum lm_m_op op, int64_t ns);
/* a request of @kind in @space (@ofd: an OFD lock) ended with @err */
void lm_metrics_request(enum dl_space space, bool ofd, enum lm_m_kind kind,
			int err);
/* a lock was granted @ns after it was asked for */
void lm_metrics_granted_after(int64_t ns);
void lm_metrics_lost(enum lm_m_lost cause);
void lm_metrics_deadlock(void);
void lm_metrics_timeout(void);

/* the time @expr (a backend call) takes, counted under @op */
#define LM_TIMED(op, expr)                                       \
	({                                                       \
		int64_t lm_t0_ = dl_mono_ns();                   \
		__typeof__(expr) lm_r_ = (expr);                 \
		lm_metrics_backend((op), dl_mono_ns() - lm_t0_); \
		lm_r_;                                           \
	})

/*
 * A front-end's own counter family, rendered with the rest:
 * NAME{LABEL="names[i]"} values[i] for i < n.  @values stays the
 * caller's (static) memory; one table only (a second call replaces it).
 */
void lm_metrics_table(const char *name, const char *help, const char *label,
		      const char *const *names, _Atomic uint64_t *values,
		      size_t n);

#endif /* DL_LM_METRICS_H */
