/*
 * metrics.c - the lock manager's counters and their Prometheus text
 * (lockmgr_metrics()); see metrics.h.
 *
 * Names and units follow the Prometheus conventions: a _total suffix on
 * counters, seconds for durations, one HELP and TYPE line per family.
 * Every label combination that can occur is printed from the first
 * scrape on (at 0), so a rate() never starts from a missing series.
 * Histograms keep per-bucket counts and print them cumulatively.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/lock/internal.h"
#include "fs/lock/metrics.h"

/* upper bounds of the buckets, in seconds (then +Inf) */
static const double lm_bounds[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
				    0.005,  0.01,    0.025,  0.05,  0.1,
				    0.25,   0.5,     1,	     2.5,   5,
				    10,	    30 };
#define LM_NB (sizeof(lm_bounds) / sizeof(lm_bounds[0]))

struct lm_hist {
	_Atomic uint64_t buckets[LM_NB + 1]; /* the last: above every bound */
	_Atomic uint64_t sum_ns;
	_Atomic uint64_t count;
};

enum { LM_SPACES = 3 }; /* flock, posix, ofd */

enum lm_m_result {
	LM_RES_OK,
	LM_RES_CONFLICT,
	LM_RES_EDEADLK,
	LM_RES_EINTR,
	LM_RES_UNAVAILABLE,
	LM_RES_ERROR,
	LM_RES_N
};

static const char *const lm_op_names[LM_OP_N] = {
	"lock", "unlock", "release", "cancel", "getlk", "list",
};
static const char *const lm_kind_names[LM_KIND_N] = {
	"lock",
	"trylock",
	"unlock",
	"getlk",
};
static const char *const lm_space_names[LM_SPACES] = { "flock", "posix",
						       "ofd" };
static const char *const lm_result_names[LM_RES_N] = {
	"ok", "conflict", "edeadlk", "eintr", "enolck", "error",
};
static const char *const lm_lost_names[LM_LOST_N] = {
	"lease",
	"broken",
	"unlock_failed",
	"other",
};

static struct {
	_Atomic uint64_t requests[LM_SPACES][LM_KIND_N][LM_RES_N];
	_Atomic uint64_t lost[LM_LOST_N];
	_Atomic uint64_t deadlocks;
	_Atomic uint64_t timeouts;
	struct lm_hist backend[LM_OP_N];
	struct lm_hist wait;
} lm_m;

/* the front-end's table (lm_metrics_table()) */
static pthread_mutex_t lm_table_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct {
	const char *name, *help, *label;
	const char *const *names;
	_Atomic uint64_t *values;
	size_t n;
} lm_table;

static void hist_add(struct lm_hist *h, int64_t ns)
{
	double s = (double)(ns > 0 ? ns : 0) / 1e9;
	size_t i = 0;

	while (i < LM_NB && s > lm_bounds[i])
		i++;
	atomic_fetch_add(&h->buckets[i], 1);
	atomic_fetch_add(&h->sum_ns, (uint64_t)(ns > 0 ? ns : 0));
	atomic_fetch_add(&h->count, 1);
}

void lm_metrics_backend(enum lm_m_op op, int64_t ns)
{
	if ((unsigned)op < LM_OP_N)
		hist_add(&lm_m.backend[op], ns);
}

static enum lm_m_result lm_result(int err)
{
	switch (err) {
	case 0:
		return LM_RES_OK;
	case -EAGAIN:
		return LM_RES_CONFLICT;
	case -EDEADLK:
		return LM_RES_EDEADLK;
	case -EINTR:
		return LM_RES_EINTR;
	case -ENOLCK:
		return LM_RES_UNAVAILABLE;
	default:
		return LM_RES_ERROR;
	}
}

void lm_metrics_request(enum dl_space space, bool ofd, enum lm_m_kind kind,
			int err)
{
	unsigned s = ofd ? 2 : space == DL_SPACE_FLOCK ? 0 : 1;

	if ((unsigned)kind < LM_KIND_N)
		atomic_fetch_add(&lm_m.requests[s][kind][lm_result(err)], 1);
}

void lm_metrics_granted_after(int64_t ns)
{
	hist_add(&lm_m.wait, ns);
}

void lm_metrics_lost(enum lm_m_lost cause)
{
	if ((unsigned)cause < LM_LOST_N)
		atomic_fetch_add(&lm_m.lost[cause], 1);
}

void lm_metrics_deadlock(void)
{
	atomic_fetch_add(&lm_m.deadlocks, 1);
}

void lm_metrics_timeout(void)
{
	atomic_fetch_add(&lm_m.timeouts, 1);
}

void lm_metrics_table(const char *name, const char *help, const char *label,
		      const char *const *names, _Atomic uint64_t *values,
		      size_t n)
{
	pthread_mutex_lock(&lm_table_mutex);
	lm_table.name = name;
	lm_table.help = help;
	lm_table.label = label;
	lm_table.names = names;
	lm_table.values = values;
	lm_table.n = n;
	pthread_mutex_unlock(&lm_table_mutex);
}

/* ---- rendering ---------------------------------------------------------- */

static void family(FILE *f, const char *name, const char *type,
		   const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist_print(FILE *f, const char *name, const char *labels,
		       const struct lm_hist *h)
{
	uint64_t cum = 0;
	const char *sep = labels[0] ? "," : "";

	for (size_t i = 0; i <= LM_NB; i++) {
		cum += atomic_load(&h->buckets[i]);
		if (i < LM_NB)
			fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name,
				labels, sep, lm_bounds[i],
				(unsigned long long)cum);
		else
			fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name,
				labels, sep, (unsigned long long)cum);
	}
	fprintf(f, "%s_sum%s%s%s %.9f\n", name, labels[0] ? "{" : "", labels,
		labels[0] ? "}" : "", (double)atomic_load(&h->sum_ns) / 1e9);
	fprintf(f, "%s_count%s%s%s %llu\n", name, labels[0] ? "{" : "", labels,
		labels[0] ? "}" : "",
		(unsigned long long)atomic_load(&h->count));
}

static void counter_line(FILE *f, const char *name, const char *label,
			 const char *value, uint64_t v)
{
	fprintf(f, "%s{%s=\"%s\"} %llu\n", name, label, value,
		(unsigned long long)v);
}

/* -o cache=on: what the cache decided here and gave back */
static void cache_families(FILE *f, struct dl_backend *be)
{
	struct dl_cache_stats st;

	if (dl_backend_cache_stats(be, &st) < 0)
		return;
	family(f, "dlockfs_cache_files", "gauge",
	       "Files with a right on this host: cached (decided here) or "
	       "direct (decided in the backend).");
	fprintf(f, "dlockfs_cache_files{state=\"cached\"} %llu\n",
		(unsigned long long)st.cached);
	fprintf(f, "dlockfs_cache_files{state=\"direct\"} %llu\n",
		(unsigned long long)st.direct);
	family(f, "dlockfs_cache_local_grants_total", "counter",
	       "Locks granted under a cached right, without a backend round "
	       "trip.");
	fprintf(f, "dlockfs_cache_local_grants_total %llu\n",
		(unsigned long long)st.local_grants);
	family(f, "dlockfs_cache_rights_taken_total", "counter",
	       "Files this host began to cache.");
	fprintf(f, "dlockfs_cache_rights_taken_total %llu\n",
		(unsigned long long)st.rights_taken);
	family(f, "dlockfs_cache_revocations_total", "counter",
	       "Cached files given back because another host asked.");
	fprintf(f, "dlockfs_cache_revocations_total %llu\n",
		(unsigned long long)st.revocations);
	family(f, "dlockfs_cache_revocation_wait_seconds_total", "counter",
	       "Time from another host's request to the give-back, summed "
	       "over the revocations.");
	fprintf(f, "dlockfs_cache_revocation_wait_seconds_total %.3f\n",
		(double)st.revoke_wait_ms / 1000);
}

int lockmgr_metrics(struct lockmgr *lm, char **out)
{
	size_t nholds, nwaiters, nlost, len = 0;
	const struct dl_lease *l = lm->lease;
	char *buf = NULL, labels[64];
	int64_t until = atomic_load(&l->until_ms);
	FILE *f;

	pthread_mutex_lock(&lm->mutex);
	nholds = lm->nholds;
	nwaiters = lm->nwaiters;
	nlost = atomic_load(&lm->nlost);
	pthread_mutex_unlock(&lm->mutex);

	f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	family(f, "dlockfs_build_info", "gauge",
	       "The running dlockfs: version and backend scheme.");
	fprintf(f, "dlockfs_build_info{version=\"%s\",backend=\"%s\"} 1\n",
		DLOCKFS_VERSION, lm->be->ops->scheme);
	family(f, "dlockfs_backend_up", "gauge",
	       "1 while the backend vouches for this host's locks (its lease "
	       "is trusted), else 0.");
	fprintf(f, "dlockfs_backend_up %d\n", dl_mono_ms() < until ? 1 : 0);

	family(f, "dlockfs_lock_requests_total", "counter",
	       "Lock requests by lock space (flock, posix, ofd), kind (lock: "
	       "blocking, trylock, unlock, getlk) and result (ok, conflict, "
	       "edeadlk: a deadlock or lock_timeout, eintr, enolck: the "
	       "backend could not decide, error).");
	for (unsigned s = 0; s < LM_SPACES; s++)
		for (unsigned k = 0; k < LM_KIND_N; k++)
			for (unsigned r = 0; r < LM_RES_N; r++)
				fprintf(f,
					"dlockfs_lock_requests_total{space=\"%s"
					"\",kind=\"%s\",result=\"%s\"} %llu\n",
					lm_space_names[s], lm_kind_names[k],
					lm_result_names[r],
					(unsigned long long)atomic_load(
						&lm_m.requests[s][k][r]));

	family(f, "dlockfs_lock_wait_seconds", "histogram",
	       "Time from a lock request to its grant (queued or not).");
	hist_print(f, "dlockfs_lock_wait_seconds", "", &lm_m.wait);

	family(f, "dlockfs_backend_request_duration_seconds", "histogram",
	       "Duration of the lock manager's calls into the backend, by "
	       "operation.");
	for (unsigned o = 0; o < LM_OP_N; o++) {
		snprintf(labels, sizeof(labels), "op=\"%s\"", lm_op_names[o]);
		hist_print(f, "dlockfs_backend_request_duration_seconds",
			   labels, &lm_m.backend[o]);
	}

	family(f, "dlockfs_locks_held", "gauge",
	       "Locks held by this host's owners (one per owner, file and "
	       "lock space).");
	fprintf(f, "dlockfs_locks_held %zu\n", nholds);
	family(f, "dlockfs_lock_waiters", "gauge",
	       "Lock requests of this host waiting now.");
	fprintf(f, "dlockfs_lock_waiters %zu\n", nwaiters);
	family(f, "dlockfs_locks_lost", "gauge",
	       "Held locks marked lost, not yet released by their owner.");
	fprintf(f, "dlockfs_locks_lost %zu\n", nlost);

	family(f, "dlockfs_lost_locks_total", "counter",
	       "Lock losses by cause (lease, broken, unlock_failed, other).");
	for (unsigned c = 0; c < LM_LOST_N; c++)
		counter_line(f, "dlockfs_lost_locks_total", "cause",
			     lm_lost_names[c], atomic_load(&lm_m.lost[c]));
	family(f, "dlockfs_deadlocks_total", "counter",
	       "Waits refused with EDEADLK because they closed a cycle.");
	fprintf(f, "dlockfs_deadlocks_total %llu\n",
		(unsigned long long)atomic_load(&lm_m.deadlocks));
	family(f, "dlockfs_lock_timeouts_total", "counter",
	       "Waits that ran past lock_timeout (EDEADLK).");
	fprintf(f, "dlockfs_lock_timeouts_total %llu\n",
		(unsigned long long)atomic_load(&lm_m.timeouts));
	family(f, "dlockfs_lease_renewals_total", "counter",
	       "Lease renewals the backend confirmed (0 where the client "
	       "library keeps the lease, as ZooKeeper's session).");
	fprintf(f, "dlockfs_lease_renewals_total %llu\n",
		(unsigned long long)atomic_load(&l->renewals));
	family(f, "dlockfs_lease_renewal_failures_total", "counter",
	       "Lease renewals that failed (no answer, or the lease was "
	       "gone).");
	fprintf(f, "dlockfs_lease_renewal_failures_total %llu\n",
		(unsigned long long)atomic_load(&l->renew_failures));

	cache_families(f, lm->be);

	pthread_mutex_lock(&lm_table_mutex);
	if (lm_table.n) {
		family(f, lm_table.name, "counter", lm_table.help);
		for (size_t i = 0; i < lm_table.n; i++)
			counter_line(f, lm_table.name, lm_table.label,
				     lm_table.names[i],
				     atomic_load(&lm_table.values[i]));
	}
	pthread_mutex_unlock(&lm_table_mutex);
	if (fclose(f) != 0 || !buf) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	return 0;
}
