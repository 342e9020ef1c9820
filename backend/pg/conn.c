/*
 * conn.c - the PostgreSQL backend's connections: connect with a deadline,
 * run one statement with a deadline, install the schema on first use (or
 * upgrade one of an older version: schema.sql's sections), and keep the
 * server's health (up, reconnect backoff) shared by all of them.
 *
 * Every function here works on one struct pg_conn, owned by the calling
 * thread (see internal.h); pb->mutex is taken only briefly for the shared
 * health fields, never across I/O.
 *
 * Connecting never blocks past its deadline: libpq's non-blocking
 * PQconnectStartParams()/PQconnectPoll() under our own poll(), because
 * libpq's connect_timeout counts whole seconds (at least 2).  Several
 * hosts are libpq's failover list; when a connect times out (a host that
 * swallows packets), the next attempt starts with the following host.
 * A new connection is checked before use: a server older than 11 is
 * refused, and so is a pooler in transaction mode (the backend pid the
 * server reports differs from the one libpq was told at startup, so
 * LISTEN and advisory locks would not stay on one server session).
 *
 * A statement is one extended-protocol round trip of a statement prepared
 * once per connection.  Its answer is awaited for connect_timeout_ms; a
 * connection that dies meanwhile, or stays silent, is closed, and the
 * caller learns whether the statement was sent (then it may have run:
 * "in doubt").  A connection that died while idle (server restart,
 * pg_terminate_backend) is noticed before anything is sent on it and
 * replaced at once: that is a network blip, not a failure.
 *
 * What it does not do: keep a statement running past the caller's
 * patience (a closed connection is all the server is told), or log a
 * password (libpq's messages never hold one).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/pg/internal.h"
#include "backend/pg/schema_sql.h"
#include "backend/util/log.h"

static const char *const sql_names[PG_SQL_N] = {
	[PG_SQL_LOCK] = "dl_lock",	 [PG_SQL_UNLOCK] = "dl_unlock",
	[PG_SQL_RELEASE] = "dl_release", [PG_SQL_CANCEL] = "dl_cancel",
	[PG_SQL_POLL] = "dl_poll",	 [PG_SQL_GETLK] = "dl_getlk",
	[PG_SQL_LIST] = "dl_list",	 [PG_SQL_BREAK] = "dl_break",
	[PG_SQL_REG] = "dl_reg",	 [PG_SQL_RENEW] = "dl_renew",
	[PG_SQL_DROP] = "dl_drop",	 [PG_SQL_POKE] = "dl_poke",
	[PG_SQL_VERSION] = "dl_version", [PG_SQL_BUMP] = "dl_bump",
};

/* the statements; @S@ is the schema */
static const char *const sql_fmt[PG_SQL_N] = {
	[PG_SQL_LOCK] = "SELECT r, token FROM @S@.lock($1, $2, $3, $4, $5, "
			"$6, $7, $8, $9)",
	[PG_SQL_UNLOCK] = "SELECT @S@.unlock($1, $2, $3, $4, $5, $6, $7)",
	[PG_SQL_RELEASE] = "SELECT @S@.release($1, $2, $3, $4, $5)",
	[PG_SQL_CANCEL] = "SELECT r, token FROM @S@.cancel($1, $2, $3)",
	[PG_SQL_POLL] = "SELECT o_wait, o_state, o_token "
			"FROM @S@.poll($1, $2, $3)",
	[PG_SQL_GETLK] = "SELECT o_type, o_start, o_end, o_lease, o_owner, "
			 "o_pid, o_token, o_since, o_host "
			 "FROM @S@.getlk($1, $2, $3, $4, $5, $6, $7)",
	[PG_SQL_LIST] = "SELECT o_kind, o_res, o_space, o_type, o_start, "
			"o_end, o_lease, o_owner, o_pid, o_token, o_since, "
			"o_host FROM @S@.list($1)",
	[PG_SQL_BREAK] = "SELECT @S@.break_lock($1::bytea)",
	[PG_SQL_REG] = "SELECT @S@.reg($1, $2, $3, $4, $5)",
	[PG_SQL_RENEW] = "SELECT o_kind, o_space, o_owner, o_res, o_token "
			 "FROM @S@.renew($1, $2)",
	[PG_SQL_DROP] = "SELECT @S@.drop_lease($1)",
	[PG_SQL_POKE] = "SELECT @S@.poke($1::text, $2::bytea)",
	[PG_SQL_VERSION] = "SELECT o_version, o_host, o_changed "
			   "FROM @S@.version_of($1::bytea)",
	[PG_SQL_BUMP] = "SELECT o_version, o_host, o_changed "
			"FROM @S@.bump($1::text, $2::bytea, $3::text)",
};

/* @text with every @from replaced by @to, malloc'd; NULL on -ENOMEM */
static char *replace_all(const char *text, const char *from, const char *to)
{
	size_t flen = strlen(from), tlen = strlen(to), n = 0, len;
	const char *p;
	char *out, *o;

	for (p = strstr(text, from); p; p = strstr(p + flen, from))
		n++;
	len = strlen(text) + n * tlen + 1;
	out = malloc(len);
	if (!out)
		return NULL;
	o = out;
	while ((p = strstr(text, from))) {
		memcpy(o, text, (size_t)(p - text));
		o += p - text;
		memcpy(o, to, tlen);
		o += tlen;
		text = p + flen;
	}
	strcpy(o, text);
	return out;
}

int pg_sql_init(struct pg_backend *pb)
{
	for (int i = 0; i < PG_SQL_N; i++) {
		pb->sql[i] = replace_all(sql_fmt[i], "@S@", pb->uri.schema);
		if (!pb->sql[i])
			return -ENOMEM;
	}
	return 0;
}

void pg_sql_free(struct pg_backend *pb)
{
	for (int i = 0; i < PG_SQL_N; i++) {
		free(pb->sql[i]);
		pb->sql[i] = NULL;
	}
}

/* the first line of libpq's message for @c, in @buf */
static const char *conn_message(PGconn *c, char *buf, size_t len)
{
	const char *m = c ? PQerrorMessage(c) : "out of memory";

	snprintf(buf, len, "%.*s", (int)strcspn(m, "\n"), m);
	return buf;
}

void pg_set_down(struct pg_backend *pb, const char *why)
{
	pthread_mutex_lock(&pb->mutex);
	if (pb->up)
		dl_log(DL_LOG_WARNING, "postgresql: server unreachable: %s",
		       why);
	pb->up = false;
	pb->backoff_ms = pb->backoff_ms ? pb->backoff_ms * 2
					: PG_BACKOFF_MIN_MS;
	if (pb->backoff_ms > PG_BACKOFF_MAX_MS)
		pb->backoff_ms = PG_BACKOFF_MAX_MS;
	pb->retry_at = dl_mono_ms() + pb->backoff_ms;
	pthread_mutex_unlock(&pb->mutex);
}

/*
 * The server's WAL timeline (@tl, 8 hex digits, "" unknown) is the one
 * sign of a history that forked: a replica promoted by a failover, a
 * backup restored.  Its data may lack grants and renewals that were
 * acknowledged to us, so every lock we hold is reported lost (a restart
 * of the same server keeps the timeline, and the locks).
 */
void pg_set_up(struct pg_backend *pb, PGconn *c, const char *tl)
{
	const char *v = c ? PQparameterStatus(c, "server_version") : NULL;
	char was[9] = "";
	bool forked = false;

	pthread_mutex_lock(&pb->mutex);
	if (!pb->up && pb->was_up)
		dl_log(DL_LOG_INFO, "postgresql: server reachable again");
	pb->up = true;
	pb->was_up = true;
	pb->backoff_ms = 0;
	pb->retry_at = 0;
	if (v)
		snprintf(pb->server_version, sizeof(pb->server_version), "%.*s",
			 (int)strcspn(v, " "), v);
	if (tl && tl[0]) {
		forked = pb->timeline[0] && strcmp(pb->timeline, tl) != 0;
		snprintf(was, sizeof(was), "%s", pb->timeline);
		snprintf(pb->timeline, sizeof(pb->timeline), "%s", tl);
	}
	pthread_mutex_unlock(&pb->mutex);
	if (forked) {
		char why[128];

		snprintf(why, sizeof(why),
			 "is not trusted: the server's timeline changed from "
			 "%s to %s (a failover or a restore may have lost "
			 "recent grants)",
			 was, tl);
		pg_lease_lose_all(pb, why);
	}
}

void pg_disconnect(struct pg_conn *pc)
{
	if (pc->c)
		PQfinish(pc->c);
	pc->c = NULL;
	pc->prepared = 0;
}

/* wait for @events on @fd until @deadline; 1 ready, 0 timed out, -1 */
static int conn_wait(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		int64_t left = deadline - dl_mono_ms();
		int n;

		if (left <= 0)
			return 0;
		n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (n > 0)
			return 1;
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

/*
 * Read every result of the statement in flight on @pc until @deadline:
 * *out is the first error, else the last result (NULL when the answer did
 * not come).  Returns 0, or -ECONNRESET: the connection died or stayed
 * silent (it is closed then).
 */
static int conn_result(struct pg_conn *pc, int64_t deadline, PGresult **out)
{
	PGresult *keep = NULL;

	*out = NULL;
	for (;;) {
		PGresult *r;

		while (PQisBusy(pc->c)) {
			if (conn_wait(PQsocket(pc->c), POLLIN, deadline) <= 0 ||
			    !PQconsumeInput(pc->c))
				goto out_lost;
		}
		r = PQgetResult(pc->c);
		if (!r)
			break;
		if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
			PQclear(r);
			continue;
		}
		PQclear(keep);
		keep = r;
	}
	if (!keep || PQstatus(pc->c) == CONNECTION_BAD) {
		/* an error the server sent before it closed (terminated,
		 * shut down) is still an answer: the statement did not run */
		if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
			pg_disconnect(pc);
			*out = keep;
			return 0;
		}
		goto out_lost;
	}
	*out = keep;
	return 0;

out_lost:
	PQclear(keep);
	pg_disconnect(pc);
	return -ECONNRESET;
}

int pg_exec_simple(struct pg_backend *pb, struct pg_conn *pc, const char *sql,
		   int64_t deadline, PGresult **out, char *err, size_t errlen)
{
	PGresult *r = NULL;
	int ret;

	if (out)
		*out = NULL;
	ret = pg_connect(pb, pc, deadline, err, errlen);
	if (ret < 0)
		return ret;
	if (!PQsendQuery(pc->c, sql)) {
		conn_message(pc->c, err, errlen);
		pg_disconnect(pc);
		return -ENOLCK;
	}
	if (conn_result(pc, deadline, &r) < 0) {
		snprintf(err, errlen, "no answer from the server");
		return -ENOLCK;
	}
	if (PQresultStatus(r) != PGRES_COMMAND_OK &&
	    PQresultStatus(r) != PGRES_TUPLES_OK) {
		const char *m = PQresultErrorMessage(r);

		snprintf(err, errlen, "%.*s", (int)strcspn(m, "\n"), m);
		PQclear(r);
		return -EIO;
	}
	if (out)
		*out = r;
	else
		PQclear(r);
	return 0;
}

/* checks of a fresh connection; 0 or -EACCES with a reason in @err */
static int conn_check(struct pg_backend *pb, struct pg_conn *pc,
		      int64_t deadline, char tl[9], char *err, size_t errlen)
{
	PGresult *r = NULL;
	char sql[256];
	long pid;
	int ret;

	if (PQserverVersion(pc->c) < PG_SERVER_VERSION_MIN) {
		snprintf(err, errlen,
			 "PostgreSQL %d is too old (11 or newer needed)",
			 PQserverVersion(pc->c) / 10000);
		return -EACCES;
	}
	/* a statement never outlives the lease it was sent under; notices
	 * (IF NOT EXISTS, ...) are not ours to print */
	snprintf(sql, sizeof(sql),
		 "SET statement_timeout = %d; SET client_min_messages = "
		 "warning; SET idle_in_transaction_session_timeout = %d; "
		 "SELECT pg_backend_pid(), CASE WHEN pg_is_in_recovery() "
		 "THEN '' ELSE substr(pg_walfile_name(pg_current_wal_lsn()), "
		 "1, 8) END",
		 pb->uri.ttl_ms, pb->uri.ttl_ms);
	ret = pg_exec_simple(pb, pc, sql, deadline, &r, err, errlen);
	if (ret < 0)
		return ret;
	pid = PQntuples(r) == 1 ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : -1;
	snprintf(tl, 9, "%s", PQntuples(r) == 1 ? PQgetvalue(r, 0, 1) : "");
	PQclear(r);
	if (pid != PQbackendPID(pc->c)) {
		snprintf(err, errlen,
			 "a connection pooler sits between dlockfs and the "
			 "server (server pid %ld, pooler's %d): unsupported "
			 "(LISTEN and the lease need one server session per "
			 "connection); connect to the server directly",
			 pid, PQbackendPID(pc->c));
		return -EACCES;
	}
	return 0;
}

int pg_connect(struct pg_backend *pb, struct pg_conn *pc, int64_t deadline,
	       char *err, size_t errlen)
{
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	struct pg_conninfo ci;
	char appname[64], tl[9] = "";
	size_t first;
	int64_t retry_at, now;
	PGconn *c;
	int ret;

	if (pc->c) {
		if (PQstatus(pc->c) == CONNECTION_OK)
			return 0;
		pg_disconnect(pc);
	}
	pthread_mutex_lock(&pb->mutex);
	retry_at = pb->up ? 0 : pb->retry_at;
	first = pb->first_host;
	pthread_mutex_unlock(&pb->mutex);
	/* the server was just unreachable: not before the next try is due
	 * (no pile of attempts), but then try, if our deadline allows: a
	 * server back meanwhile answers (a restart is not an outage) */
	now = dl_mono_ms();
	if (now < retry_at) {
		if (retry_at >= deadline) {
			snprintf(err, errlen,
				 "server unreachable (reconnecting)");
			return -ENOLCK;
		}
		usleep((useconds_t)(retry_at - now) * 1000);
	}
	snprintf(appname, sizeof(appname), "dlockfs %.40s %s", pb->host_id,
		 pc->role);
	pg_uri_conninfo(&pb->uri, first, appname, pb->password, &ci);
	c = PQconnectStartParams(ci.kw, ci.val, 0);
	if (!c || PQstatus(c) == CONNECTION_BAD)
		goto out_fail;
	while (st != PGRES_POLLING_OK) {
		int n;

		if (st == PGRES_POLLING_FAILED)
			goto out_fail;
		n = conn_wait(PQsocket(c),
			      st == PGRES_POLLING_READING ? POLLIN : POLLOUT,
			      deadline);
		if (n == 0) {
			snprintf(err, errlen,
				 "no connection within %d ms (connect_"
				 "timeout_ms)",
				 pb->uri.connect_timeout_ms);
			PQfinish(c);
			pthread_mutex_lock(&pb->mutex);
			pb->first_host = (first + 1) % pb->uri.nhosts;
			pthread_mutex_unlock(&pb->mutex);
			pg_set_down(pb, err);
			return -ENOLCK;
		}
		if (n < 0)
			goto out_fail;
		st = PQconnectPoll(c);
	}
	pc->c = c;
	pc->prepared = 0;
	ret = conn_check(pb, pc, deadline, tl, err, errlen);
	if (ret < 0) {
		pg_disconnect(pc);
		if (ret == -EACCES && pb->opened) /* open() says it itself */
			dl_log_ratelimited(DL_LOG_ERR, 10000, "postgresql: %s",
					   err);
		else
			pg_set_down(pb, err);
		return ret;
	}
	pg_set_up(pb, pc->c, tl);
	return 0;

out_fail:
	conn_message(c, err, errlen);
	PQfinish(c);
	pg_set_down(pb, err);
	/* a refusal by the server (authentication, no such database) is
	 * not a network failure, but it cannot grant either */
	return strstr(err, "authentication") || strstr(err, "password") ||
			       strstr(err, "does not exist") ||
			       strstr(err, "permission")
		       ? -EACCES
		       : -ENOLCK;
}

/* prepare @q on @pc unless it is; 0 or -ECONNRESET / -EIO */
static int conn_prepare(struct pg_backend *pb, struct pg_conn *pc,
			enum pg_sql q, int n, int64_t deadline)
{
	PGresult *r;
	int ret = 0;

	if (pc->prepared & (1u << q))
		return 0;
	if (!PQsendPrepare(pc->c, sql_names[q], pb->sql[q], n, NULL)) {
		pg_disconnect(pc);
		return -ECONNRESET;
	}
	if (conn_result(pc, deadline, &r) < 0)
		return -ECONNRESET;
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		const char *m = PQresultErrorMessage(r);

		dl_log_ratelimited(DL_LOG_ERR, 10000,
				   "postgresql: prepare %s: %.*s", sql_names[q],
				   (int)strcspn(m, "\n"), m);
		ret = PQstatus(pc->c) == CONNECTION_OK ? -EIO : -ECONNRESET;
	} else {
		pc->prepared |= 1u << q;
	}
	PQclear(r);
	return ret;
}

int pg_exec(struct pg_backend *pb, struct pg_conn *pc, enum pg_sql q, int n,
	    const char *const *values, const int *lengths, const int *formats,
	    int64_t deadline, PGresult **out, bool *indoubt)
{
	int64_t stmt_deadline;
	PGresult *r = NULL;
	char err[256];
	int ret;

	*out = NULL;
	*indoubt = false;
	/* a connection that died while idle is replaced before use */
	if (pc->c &&
	    (!PQconsumeInput(pc->c) || PQstatus(pc->c) != CONNECTION_OK)) {
		dl_log(DL_LOG_DEBUG, "postgresql: %s connection lost: %s",
		       pc->role, conn_message(pc->c, err, sizeof(err)));
		pg_disconnect(pc);
	}
	ret = pg_connect(pb, pc, deadline, err, sizeof(err));
	if (ret < 0) {
		dl_log(DL_LOG_DEBUG, "postgresql: %s: %s", sql_names[q], err);
		return -ENOLCK;
	}
	stmt_deadline = dl_mono_ms() + pb->uri.connect_timeout_ms;
	ret = conn_prepare(pb, pc, q, n, stmt_deadline);
	if (ret < 0)
		return ret == -EIO ? -EIO : -ECONNRESET;
	if (!PQsendQueryPrepared(pc->c, sql_names[q], n, values, lengths,
				 formats, 0)) {
		dl_log(DL_LOG_DEBUG, "postgresql: %s: send: %s", sql_names[q],
		       conn_message(pc->c, err, sizeof(err)));
		pg_disconnect(pc);
		return -ECONNRESET;
	}
	*indoubt = true;
	if (pc->role[0] == 'w' && pg_fault_take(&pb->fault.drop_result)) {
		/* test fault: the answer is lost on the way back */
		(void)conn_result(pc, stmt_deadline, &r);
		PQclear(r);
		pg_disconnect(pc);
		return -ECONNRESET;
	}
	if (conn_result(pc, stmt_deadline, &r) < 0) {
		dl_log(DL_LOG_DEBUG, "postgresql: %s: no answer (%s)",
		       sql_names[q], pc->role);
		return -ECONNRESET;
	}
	*indoubt = false;
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		const char *m = PQresultErrorMessage(r);
		const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		bool lost = !pc->c || PQstatus(pc->c) != CONNECTION_OK;

		dl_log_ratelimited(lost ? DL_LOG_DEBUG : DL_LOG_ERR, 5000,
				   "postgresql: %s: %s %.*s", sql_names[q],
				   state ? state : "", (int)strcspn(m, "\n"),
				   m);
		PQclear(r);
		/* refused by a server that then closed (terminated, shut
		 * down): it did not run, another connection may do it */
		return lost ? -ECONNRESET : -EIO;
	}
	*out = r;
	return 0;
}

/* the schema's version: 0 when it has none yet; or a negative errno */
static int schema_version(struct pg_backend *pb, struct pg_conn *pc,
			  int64_t deadline, char *err, size_t errlen)
{
	char sql[256];
	PGresult *r;
	int ret, v;

	snprintf(sql, sizeof(sql),
		 "SELECT CASE WHEN to_regclass('%s.meta') IS NULL THEN 0 "
		 "ELSE -1 END",
		 pb->uri.schema);
	ret = pg_exec_simple(pb, pc, sql, deadline, &r, err, errlen);
	if (ret < 0)
		return ret;
	v = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (v == 0)
		return 0;
	snprintf(sql, sizeof(sql),
		 "SELECT coalesce(max(version), 0) FROM %s.meta",
		 pb->uri.schema);
	ret = pg_exec_simple(pb, pc, sql, deadline, &r, err, errlen);
	if (ret < 0)
		return ret;
	v = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

/*
 * schema_ddl() - the DDL that brings a schema of version @from (0: none)
 * to PG_SCHEMA_VERSION: all of schema.sql for a new one, else its
 * sections after @from (see its header), with the names filled in, in a
 * malloc'd *out.  0, or -EINVAL (no such section) / -ENOMEM with the
 * reason in @err.
 */
static int schema_ddl(struct pg_backend *pb, int from, char **out, char *err,
		      size_t errlen)
{
	const char *text = pg_schema_sql;
	char mark[32], ver[16], *tmp;

	if (from > 0) {
		snprintf(mark, sizeof(mark), "\n-- @@ version %d\n", from + 1);
		text = strstr(pg_schema_sql, mark);
		if (!text) {
			snprintf(err, errlen, "no upgrade from version %d",
				 from);
			return -EINVAL;
		}
	}
	snprintf(ver, sizeof(ver), "%d", PG_SCHEMA_VERSION);
	tmp = replace_all(text, "@SCHEMA@", pb->uri.schema);
	*out = tmp ? replace_all(tmp, "@VERSION@", ver) : NULL;
	free(tmp);
	if (!*out) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

int pg_schema_install(struct pg_backend *pb, struct pg_conn *pc, char *err,
		      size_t errlen)
{
	int64_t deadline = dl_mono_ms() + pb->uri.ttl_ms;
	char sql[512], why[256] = "";
	char *ddl;
	PGresult *r;
	int ret, v, nsp;

	v = schema_version(pb, pc, deadline, err, errlen);
	if (v < 0)
		return v;
	if (v == PG_SCHEMA_VERSION)
		return 0;
	if (v > PG_SCHEMA_VERSION) {
		snprintf(err, errlen,
			 "schema %s has version %d; this dlockfs knows %d "
			 "(upgrade dlockfs, or use another schema)",
			 pb->uri.schema, v, PG_SCHEMA_VERSION);
		return -EINVAL;
	}
	/* several daemons may start at once: one creates or upgrades, in
	 * one transaction, under an advisory lock of the schema's name (a
	 * key pair, apart from the one-bigint keys of the resources) */
	ret = pg_exec_simple(pb, pc, "BEGIN", deadline, NULL, err, errlen);
	if (ret < 0)
		return ret;
	snprintf(sql, sizeof(sql),
		 "SELECT pg_advisory_xact_lock(1684827491, hashtext('%s'))",
		 pb->uri.schema);
	ret = pg_exec_simple(pb, pc, sql, deadline, NULL, err, errlen);
	if (ret < 0)
		goto out_rollback;
	v = schema_version(pb, pc, deadline, err, errlen);
	if (v < 0) {
		ret = v;
		goto out_rollback;
	}
	if (v == 0) {
		snprintf(sql, sizeof(sql),
			 "SELECT count(*) FROM pg_namespace WHERE nspname = "
			 "'%s'",
			 pb->uri.schema);
		ret = pg_exec_simple(pb, pc, sql, deadline, &r, err, errlen);
		if (ret < 0)
			goto out_rollback;
		nsp = atoi(PQgetvalue(r, 0, 0));
		PQclear(r);
		if (nsp == 0) {
			snprintf(sql, sizeof(sql), "CREATE SCHEMA %s",
				 pb->uri.schema);
			ret = pg_exec_simple(pb, pc, sql, deadline, NULL, err,
					     errlen);
			if (ret < 0)
				goto out_rollback;
		}
	}
	if (v < PG_SCHEMA_VERSION) {
		ret = schema_ddl(pb, v, &ddl, err, errlen);
		if (ret < 0)
			goto out_rollback;
		ret = pg_exec_simple(pb, pc, ddl, deadline, NULL, err, errlen);
		free(ddl);
		if (ret < 0)
			goto out_rollback;
		snprintf(sql, sizeof(sql),
			 "INSERT INTO %s.meta (version) VALUES (%d)",
			 pb->uri.schema, PG_SCHEMA_VERSION);
		ret = pg_exec_simple(pb, pc, sql, deadline, NULL, err, errlen);
		if (ret < 0)
			goto out_rollback;
		if (v)
			dl_log(DL_LOG_NOTICE,
			       "postgresql: upgraded schema %s from version "
			       "%d to %d",
			       pb->uri.schema, v, PG_SCHEMA_VERSION);
		else
			dl_log(DL_LOG_NOTICE,
			       "postgresql: created schema %s (version %d)",
			       pb->uri.schema, PG_SCHEMA_VERSION);
	}
	ret = pg_exec_simple(pb, pc, "COMMIT", deadline, NULL, err, errlen);
	if (ret == 0 && v > PG_SCHEMA_VERSION) {
		/* a newer daemon got there first */
		snprintf(err, errlen,
			 "schema %s has version %d; this dlockfs "
			 "knows %d",
			 pb->uri.schema, v, PG_SCHEMA_VERSION);
		ret = -EINVAL;
	}
	return ret;

out_rollback:
	if (pc->c)
		pg_exec_simple(pb, pc, "ROLLBACK", deadline, NULL, why,
			       sizeof(why));
	snprintf(sql, sizeof(sql), "%s", err);
	snprintf(err, errlen, "cannot %s schema %s: %s",
		 v > 0 ? "upgrade" : "create", pb->uri.schema, sql);
	return ret == -EIO ? -EACCES : ret;
}
