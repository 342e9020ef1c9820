-- schema.sql - every lock decision of the PostgreSQL backend, made inside
-- the server.  backend/pg/conn.c builds it into the daemon (as the C string
-- pg_schema_sql, backend/pg/schema_sql.h), replaces @SCHEMA@ with the
-- validated schema name ([a-z_][a-z0-9_]*, so it needs no quoting) and
-- runs it once per database and schema, in one transaction under an
-- advisory lock, when the schema's meta table is missing (schema version
-- @VERSION@).  A later start changes nothing in it.
--
-- Versions.  The file is a series of sections: version 1 from the top,
-- then one per later version, each opened by a line '-- @@ version N'.
-- A new schema runs them all; a schema of an older version (meta's
-- max(version)) runs, in the same way, only the sections after its own,
-- and meta gets a row with the new version.  A section adds objects
-- (version 4 also renames the four functions it puts faster ones in
-- front of), so an upgraded schema and a new one are the same.  A daemon
-- refuses a schema newer than it knows (an older daemon started after
-- the upgrade: upgrade it too; those already running are unaffected).
--
-- The model (the same as backend/redis.lua's):
--   leases  one row per daemon incarnation: its expiry by the server's
--           clock, renewed every ttl/3 (renew()).  A lock of a lease that
--           has expired is purged by the next operation on its resource,
--           which then stays unavailable for the lease's lock_delay_ms
--           (delays); a lease that was dropped (its daemon gave it up and
--           reported its locks lost) takes its locks with it, no delay.
--   held    one row per granted lock (a byte range of one owner).  An
--           owner is (lease, owner): the daemon incarnation and its local
--           owner id.  The ranges of one owner never overlap and never
--           touch with the same type: apply() is range.c's
--           range_set_apply(), tests/integration/pg/pg_range.c compares
--           the two.
--   queue   one row per queued request, FIFO by seq; handoff() grants in
--           arrival order whatever no granted lock blocks, as Linux does
--           (a queued request never blocks a newcomer), records the grant
--           in handed and NOTIFYs the waiter's daemon on its channel
--           SCHEMA_INCARNATION with 'G LEASE WAITID(hex) TOKEN'.
--   handed  grants made to queued requests, until their daemon
--           acknowledges them with its next renewal (read by poll() and
--           cancel(), which may race with the NOTIFY).
--   broken  locks an administrator broke (break_lock()), returned by
--           every renewal of their lease for two lease periods, with the
--           newest token they covered, so a repeated report is harmless;
--           the lease's channel gets 'B LEASE' at once.
--   delays  lock-delay per resource after a lease expiry.
--   poke()  (version 2) asks the other daemons holding a lock on a
--           resource to give it back: 'P RESOURCE(base64)' on each
--           one's channel (the same-host cache, backend/cache.c).
--   res_versions  (version 3) the version of each resource's content
--           (optimistic concurrency): bump() adds one; no lease, never
--           purged, untouched by everything above.
--
-- Every operation on a resource is one function call, one statement, one
-- transaction: it first takes pg_advisory_xact_lock(res_key(resource)),
-- so the decision and its effects commit together and operations on one
-- resource are serialised (a hash collision only serialises two
-- resources more than needed).  Resources are bytea, compared byte for
-- byte; indexes use the 64-bit res_key, since a path may be longer than a
-- btree entry.  Offsets are numeric(20,0): every uint64 is exact, end
-- 18446744073709551615 is "to EOF".  uint64 owner and wait ids travel as
-- the bigint of the same bits.  Types: 1 shared, 2 exclusive; spaces: 0
-- flock, 1 POSIX.  Fencing tokens come from one sequence: strictly
-- increasing cluster-wide (hence per resource), never reused, across
-- restarts too.
--
-- Operator interface: the views locks, waiters and versions, and
-- break_lock(path).

CREATE TABLE @SCHEMA@.meta (
	version integer NOT NULL,
	created timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE SEQUENCE @SCHEMA@.token_seq;
CREATE SEQUENCE @SCHEMA@.lease_seq;
CREATE SEQUENCE @SCHEMA@.queue_seq;

CREATE TABLE @SCHEMA@.leases (
	id bigint PRIMARY KEY DEFAULT nextval('@SCHEMA@.lease_seq'),
	host text NOT NULL,
	pid integer NOT NULL,
	incarnation text NOT NULL,
	channel text NOT NULL,
	ttl_ms integer NOT NULL CHECK (ttl_ms > 0),
	lock_delay_ms integer NOT NULL CHECK (lock_delay_ms >= 0),
	created timestamptz NOT NULL,
	renewed timestamptz NOT NULL,
	expires timestamptz NOT NULL
);

CREATE TABLE @SCHEMA@.held (
	rkey bigint NOT NULL,
	res bytea NOT NULL,
	space smallint NOT NULL CHECK (space IN (0, 1)),
	lease bigint NOT NULL,
	owner bigint NOT NULL,
	host text NOT NULL,
	pid integer NOT NULL,
	type smallint NOT NULL CHECK (type IN (1, 2)),
	r_start numeric(20, 0) NOT NULL,
	r_end numeric(20, 0) NOT NULL,
	token bigint NOT NULL,
	granted_at timestamptz NOT NULL,
	CHECK (0 <= r_start AND r_start <= r_end
	       AND r_end <= 18446744073709551615)
);
CREATE INDEX held_rkey ON @SCHEMA@.held (rkey, space, r_start);
CREATE INDEX held_lease ON @SCHEMA@.held (lease);

CREATE TABLE @SCHEMA@.queue (
	seq bigint PRIMARY KEY DEFAULT nextval('@SCHEMA@.queue_seq'),
	rkey bigint NOT NULL,
	res bytea NOT NULL,
	space smallint NOT NULL CHECK (space IN (0, 1)),
	lease bigint NOT NULL,
	wait_id bigint NOT NULL,
	owner bigint NOT NULL,
	pid integer NOT NULL,
	type smallint NOT NULL CHECK (type IN (1, 2)),
	r_start numeric(20, 0) NOT NULL,
	r_end numeric(20, 0) NOT NULL,
	since timestamptz NOT NULL,
	UNIQUE (lease, wait_id)
);
CREATE INDEX queue_rkey ON @SCHEMA@.queue (rkey, seq);

CREATE TABLE @SCHEMA@.handed (
	lease bigint NOT NULL,
	wait_id bigint NOT NULL,
	token bigint NOT NULL,
	PRIMARY KEY (lease, wait_id)
);

CREATE TABLE @SCHEMA@.broken (
	lease bigint NOT NULL,
	space smallint NOT NULL,
	owner bigint NOT NULL,
	res bytea NOT NULL,
	max_token bigint NOT NULL,
	at timestamptz NOT NULL
);
CREATE INDEX broken_lease ON @SCHEMA@.broken (lease);

CREATE TABLE @SCHEMA@.delays (
	rkey bigint NOT NULL,
	res bytea NOT NULL,
	until timestamptz NOT NULL
);
CREATE INDEX delays_rkey ON @SCHEMA@.delays (rkey);

-- ------------------------------------------------------------ helpers

-- the 64-bit key of a resource: index key and advisory lock key
CREATE FUNCTION @SCHEMA@.res_key(p_res bytea) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
	SELECT ('x' || substr(md5('@SCHEMA@:'::bytea || p_res), 1, 16))
		::bit(64)::bigint
$$;

-- a resource name for people: the text when it is valid in the database
-- encoding (UTF-8 normally), else bytea's escape format
CREATE FUNCTION @SCHEMA@.res_text(p_res bytea) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
	RETURN convert_from(p_res, 'UTF8');
EXCEPTION WHEN OTHERS THEN
	RETURN encode(p_res, 'escape');
END
$$;

CREATE FUNCTION @SCHEMA@.ms(p_t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$
	SELECT (extract(epoch FROM p_t) * 1000)::bigint
$$;

-- Drop the locks and queued requests of dead leases (expired, or gone)
-- on the resource; a lock freed by an expiry (not a release, not a
-- dropped lease) keeps the resource unavailable until that lease's
-- expiry + its lock_delay_ms, so a frozen holder learns of its loss
-- before anyone else can act.  Returns whether anything was removed.
CREATE FUNCTION @SCHEMA@.purge(p_key bigint, p_res bytea) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
	v_now timestamptz := clock_timestamp();
	v_held bigint;
	v_waits bigint;
	v_until timestamptz;
BEGIN
	WITH gone AS (
		DELETE FROM @SCHEMA@.held h
		WHERE h.rkey = p_key AND h.res = p_res
		  AND NOT EXISTS (SELECT 1 FROM @SCHEMA@.leases l
				  WHERE l.id = h.lease AND l.expires > v_now)
		RETURNING h.lease)
	SELECT count(*),
	       max(l.expires + l.lock_delay_ms * interval '1 millisecond')
	INTO v_held, v_until
	FROM gone LEFT JOIN @SCHEMA@.leases l ON l.id = gone.lease;
	DELETE FROM @SCHEMA@.queue q
	WHERE q.rkey = p_key AND q.res = p_res
	  AND NOT EXISTS (SELECT 1 FROM @SCHEMA@.leases l
			  WHERE l.id = q.lease AND l.expires > v_now);
	GET DIAGNOSTICS v_waits = ROW_COUNT;
	IF v_until > v_now THEN
		UPDATE @SCHEMA@.delays SET until = greatest(until, v_until)
		WHERE rkey = p_key AND res = p_res;
		IF NOT FOUND THEN
			INSERT INTO @SCHEMA@.delays VALUES (p_key, p_res, v_until);
		END IF;
	END IF;
	RETURN v_held > 0 OR v_waits > 0;
END
$$;

-- is the resource inside a lock-delay?  (forgets a delay that is over)
CREATE FUNCTION @SCHEMA@.delayed(p_key bigint, p_res bytea) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
	v_until timestamptz;
BEGIN
	SELECT max(until) INTO v_until FROM @SCHEMA@.delays
	WHERE rkey = p_key AND res = p_res;
	IF v_until IS NULL THEN
		RETURN false;
	END IF;
	IF v_until > clock_timestamp() THEN
		RETURN true;
	END IF;
	DELETE FROM @SCHEMA@.delays WHERE rkey = p_key AND res = p_res;
	RETURN false;
END
$$;

-- does a granted lock of another owner block (type, [s, e]) in the space?
-- (range.c's range_conflicts(): overlap, another owner, one exclusive)
-- PL/pgSQL, not SQL: its plan is cached per session
CREATE FUNCTION @SCHEMA@.blocked(p_key bigint, p_res bytea, p_space smallint,
				 p_lease bigint, p_owner bigint,
				 p_type smallint, p_s numeric, p_e numeric)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	RETURN EXISTS (
		SELECT 1 FROM @SCHEMA@.held h
		WHERE h.rkey = p_key AND h.res = p_res AND h.space = p_space
		  AND NOT (h.lease = p_lease AND h.owner = p_owner)
		  AND h.r_start <= p_e AND h.r_end >= p_s
		  AND (h.type = 2 OR p_type = 2));
END
$$;

-- range.c's range_set_apply() on the locks of owner (p_lease, p_owner):
-- lock [p_s, p_e] as p_type (1, 2) with token p_tok, or unlock it
-- (p_type 0; with p_max, only the pieces granted with a token <= p_max:
-- a retried unlock never ends a newer grant).  Locks of the same type
-- that overlap or touch [p_s, p_e] merge into the new lock, which takes
-- the new token, pid and time; any other lock over [p_s, p_e] keeps its
-- own parts outside it.  Returns true when an exclusive lock of the
-- owner became shared (bytes freed for other readers).
CREATE FUNCTION @SCHEMA@.apply(p_key bigint, p_res bytea, p_space smallint,
			       p_lease bigint, p_owner bigint,
			       p_type smallint, p_s numeric, p_e numeric,
			       p_tok bigint, p_pid integer, p_host text,
			       p_max bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
	c_eof CONSTANT numeric := 18446744073709551615;
	v_lo numeric := CASE WHEN p_s > 0 THEN p_s - 1 ELSE 0 END;
	v_hi numeric := CASE WHEN p_e < c_eof THEN p_e + 1 ELSE c_eof END;
	v_ms numeric := p_s;
	v_me numeric := p_e;
	v_freed boolean := false;
	l record;
BEGIN
	-- the run: the owner's locks over [s, e], and those of the same
	-- type touching it (deleted whole; what survives is put back)
	FOR l IN
		DELETE FROM @SCHEMA@.held h
		WHERE h.rkey = p_key AND h.res = p_res AND h.space = p_space
		  AND h.lease = p_lease AND h.owner = p_owner
		  AND h.r_end >= v_lo AND h.r_start <= v_hi
		  AND ((p_type <> 0 AND h.type = p_type)
		       OR (h.r_end >= p_s AND h.r_start <= p_e))
		  AND (p_type <> 0 OR p_max IS NULL OR h.token <= p_max)
		RETURNING h.*
	LOOP
		IF p_type <> 0 AND l.type = p_type THEN
			v_ms := least(v_ms, l.r_start);
			v_me := greatest(v_me, l.r_end);
			CONTINUE;
		END IF;
		IF l.type = 2 AND p_type = 1 THEN
			v_freed := true;
		END IF;
		IF l.r_start < p_s THEN
			INSERT INTO @SCHEMA@.held VALUES (
				p_key, p_res, p_space, p_lease, p_owner, l.host,
				l.pid, l.type, l.r_start, p_s - 1, l.token,
				l.granted_at);
		END IF;
		IF l.r_end > p_e THEN
			INSERT INTO @SCHEMA@.held VALUES (
				p_key, p_res, p_space, p_lease, p_owner, l.host,
				l.pid, l.type, p_e + 1, l.r_end, l.token,
				l.granted_at);
		END IF;
	END LOOP;
	IF p_type <> 0 THEN
		INSERT INTO @SCHEMA@.held VALUES (
			p_key, p_res, p_space, p_lease, p_owner, p_host, p_pid,
			p_type, v_ms, v_me, p_tok, clock_timestamp());
	END IF;
	RETURN v_freed;
END
$$;

-- Hand the resource to its queued requests in arrival order: a request
-- is granted when no granted lock blocks it (as Linux, a queued request
-- does not block a later one).  Nothing is granted inside a lock-delay.
-- A grant that turns its owner's exclusive lock shared frees bytes for
-- requests before it: then another pass.  Each grant is recorded in
-- handed and NOTIFYed to its lease's channel (delivered at commit).
CREATE FUNCTION @SCHEMA@.handoff(p_key bigint, p_res bytea) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	v_again boolean := true;
	v_tok bigint;
	v_n integer := 0;
	w record;
BEGIN
	IF @SCHEMA@.delayed(p_key, p_res) THEN
		RETURN 0;
	END IF;
	WHILE v_again LOOP
		v_again := false;
		FOR w IN
			SELECT q.*, l.host, l.channel FROM @SCHEMA@.queue q
			JOIN @SCHEMA@.leases l ON l.id = q.lease
			WHERE q.rkey = p_key AND q.res = p_res
			  AND l.expires > clock_timestamp()
			ORDER BY q.seq
		LOOP
			CONTINUE WHEN @SCHEMA@.blocked(p_key, p_res, w.space,
				w.lease, w.owner, w.type, w.r_start, w.r_end);
			v_tok := nextval('@SCHEMA@.token_seq');
			IF @SCHEMA@.apply(p_key, p_res, w.space, w.lease,
					  w.owner, w.type, w.r_start, w.r_end,
					  v_tok, w.pid, w.host, NULL) THEN
				v_again := true;
			END IF;
			DELETE FROM @SCHEMA@.queue WHERE seq = w.seq;
			INSERT INTO @SCHEMA@.handed VALUES (w.lease, w.wait_id,
							    v_tok)
			ON CONFLICT (lease, wait_id)
			DO UPDATE SET token = EXCLUDED.token;
			PERFORM pg_notify(w.channel,
					  'G ' || w.lease || ' ' ||
					  to_hex(w.wait_id) || ' ' || v_tok);
			v_n := v_n + 1;
		END LOOP;
	END LOOP;
	RETURN v_n;
END
$$;

-- ------------------------------------------------------------ operations
-- Each takes the resource's advisory lock first.  p_lease is the
-- caller's lease.

-- lock -> (r, token): r 1 granted (token), 0 conflict, 2 queued
-- (p_wait not NULL), -1 the caller's lease is gone (nothing done)
CREATE FUNCTION @SCHEMA@.lock(p_lease bigint, p_res bytea, p_space smallint,
			      p_type smallint, p_s numeric, p_e numeric,
			      p_owner bigint, p_pid integer, p_wait bigint,
			      OUT r integer, OUT token bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
	v_host text;
	v_purged boolean;
	v_freed boolean;
	v_cur record;
BEGIN
	PERFORM pg_advisory_xact_lock(v_key);
	SELECT host INTO v_host FROM @SCHEMA@.leases
	WHERE id = p_lease AND expires > clock_timestamp();
	IF NOT FOUND THEN
		r := -1;
		RETURN;
	END IF;
	v_purged := @SCHEMA@.purge(v_key, p_res);
	IF p_space = 0 THEN
		-- flock(2): the same mode again is a no-op; a conversion
		-- first drops the old lock (waking others), as on Linux, so
		-- a failed LOCK_NB conversion leaves no lock at all
		SELECT * INTO v_cur FROM @SCHEMA@.held h
		WHERE h.rkey = v_key AND h.res = p_res AND h.space = 0
		  AND h.lease = p_lease AND h.owner = p_owner
		LIMIT 1;
		IF FOUND THEN
			IF v_cur.type = p_type THEN
				DELETE FROM @SCHEMA@.queue q
				WHERE q.lease = p_lease AND q.wait_id = p_wait;
				r := 1;
				token := v_cur.token;
				RETURN;
			END IF;
			DELETE FROM @SCHEMA@.held h
			WHERE h.rkey = v_key AND h.res = p_res AND h.space = 0
			  AND h.lease = p_lease AND h.owner = p_owner;
			PERFORM @SCHEMA@.handoff(v_key, p_res);
		END IF;
	END IF;
	IF @SCHEMA@.delayed(v_key, p_res)
	   OR @SCHEMA@.blocked(v_key, p_res, p_space, p_lease, p_owner,
			       p_type, p_s, p_e) THEN
		IF p_wait IS NULL THEN
			r := 0;
			RETURN;
		END IF;
		INSERT INTO @SCHEMA@.queue (rkey, res, space, lease, wait_id,
					    owner, pid, type, r_start, r_end,
					    since)
		VALUES (v_key, p_res, p_space, p_lease, p_wait, p_owner, p_pid,
			p_type, p_s, p_e, clock_timestamp())
		ON CONFLICT (lease, wait_id) DO NOTHING;
		r := 2;
		RETURN;
	END IF;
	token := nextval('@SCHEMA@.token_seq');
	v_freed := @SCHEMA@.apply(v_key, p_res, p_space, p_lease, p_owner,
				  p_type, p_s, p_e, token, p_pid, v_host, NULL);
	IF p_wait IS NOT NULL THEN
		DELETE FROM @SCHEMA@.queue q
		WHERE q.lease = p_lease AND q.wait_id = p_wait;
	END IF;
	-- a conversion to shared may unblock readers; a purge of dead
	-- leases may have freed anything
	IF v_freed OR v_purged THEN
		PERFORM @SCHEMA@.handoff(v_key, p_res);
	END IF;
	r := 1;
END
$$;

-- unlock [p_s, p_e] (only pieces granted with a token <= p_max, NULL: all)
-- -> 1 the owner still holds something here, 0 not
CREATE FUNCTION @SCHEMA@.unlock(p_lease bigint, p_res bytea,
				p_space smallint, p_s numeric, p_e numeric,
				p_owner bigint, p_max bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
BEGIN
	PERFORM pg_advisory_xact_lock(v_key);
	PERFORM @SCHEMA@.purge(v_key, p_res);
	PERFORM @SCHEMA@.apply(v_key, p_res, p_space, p_lease, p_owner,
			       0::smallint, p_s, p_e, 0, 0, '', p_max);
	PERFORM @SCHEMA@.handoff(v_key, p_res);
	RETURN (SELECT count(*) FROM (
		SELECT 1 FROM @SCHEMA@.held h
		WHERE h.rkey = v_key AND h.res = p_res AND h.space = p_space
		  AND h.lease = p_lease AND h.owner = p_owner LIMIT 1) x);
END
$$;

-- release: drop the owner's locks granted with a token <= p_max (NULL:
-- all); a newer grant (one that raced ahead of the close that asked for
-- this) survives -> 1 the owner still holds something here, 0 not
CREATE FUNCTION @SCHEMA@.release(p_lease bigint, p_res bytea,
				 p_space smallint, p_owner bigint,
				 p_max bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
BEGIN
	PERFORM pg_advisory_xact_lock(v_key);
	PERFORM @SCHEMA@.purge(v_key, p_res);
	DELETE FROM @SCHEMA@.held h
	WHERE h.rkey = v_key AND h.res = p_res AND h.space = p_space
	  AND h.lease = p_lease AND h.owner = p_owner
	  AND (p_max IS NULL OR h.token <= p_max);
	PERFORM @SCHEMA@.handoff(v_key, p_res);
	RETURN (SELECT count(*) FROM (
		SELECT 1 FROM @SCHEMA@.held h
		WHERE h.rkey = v_key AND h.res = p_res AND h.space = p_space
		  AND h.lease = p_lease AND h.owner = p_owner LIMIT 1) x);
END
$$;

-- cancel a queued request -> (r, token): 1 removed; 0 with a token:
-- granted already; 0 without: neither queued nor granted
CREATE FUNCTION @SCHEMA@.cancel(p_lease bigint, p_res bytea, p_wait bigint,
				OUT r integer, OUT token bigint)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_advisory_xact_lock(@SCHEMA@.res_key(p_res));
	DELETE FROM @SCHEMA@.queue q
	WHERE q.lease = p_lease AND q.wait_id = p_wait;
	IF FOUND THEN
		r := 1;
		RETURN;
	END IF;
	r := 0;
	SELECT h.token INTO token FROM @SCHEMA@.handed h
	WHERE h.lease = p_lease AND h.wait_id = p_wait;
END
$$;

-- the safety re-check of the caller's queued requests on a resource
-- (covers a lost NOTIFY and the end of a lock-delay): purge, hand over,
-- then per wait id 'q' (queued), 'g' (granted, with its token) or 'x'
-- (neither: lost with the lease, or never queued)
CREATE FUNCTION @SCHEMA@.poll(p_lease bigint, p_res bytea, p_ids bigint[])
RETURNS TABLE (o_wait bigint, o_state text, o_token bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
BEGIN
	PERFORM pg_advisory_xact_lock(v_key);
	PERFORM @SCHEMA@.purge(v_key, p_res);
	PERFORM @SCHEMA@.handoff(v_key, p_res);
	RETURN QUERY
		SELECT i.id,
		       CASE WHEN q.seq IS NOT NULL THEN 'q'
			    WHEN h.token IS NOT NULL THEN 'g'
			    ELSE 'x' END,
		       h.token
		FROM unnest(p_ids) AS i(id)
		LEFT JOIN @SCHEMA@.queue q
		       ON q.lease = p_lease AND q.wait_id = i.id
		LEFT JOIN @SCHEMA@.handed h
		       ON h.lease = p_lease AND h.wait_id = i.id;
END
$$;

-- F_GETLK: the granted lock of another owner that blocks the request,
-- the one with the lowest start (no row: none)
CREATE FUNCTION @SCHEMA@.getlk(p_lease bigint, p_res bytea, p_space smallint,
			       p_type smallint, p_s numeric, p_e numeric,
			       p_owner bigint)
RETURNS TABLE (o_type smallint, o_start numeric, o_end numeric,
	       o_lease bigint, o_owner bigint, o_pid integer, o_token bigint,
	       o_since bigint, o_host text)
LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
BEGIN
	PERFORM pg_advisory_xact_lock(v_key);
	IF @SCHEMA@.purge(v_key, p_res) THEN
		PERFORM @SCHEMA@.handoff(v_key, p_res);
	END IF;
	RETURN QUERY
		SELECT h.type, h.r_start, h.r_end, h.lease, h.owner, h.pid,
		       h.token, @SCHEMA@.ms(h.granted_at), h.host
		FROM @SCHEMA@.held h
		WHERE h.rkey = v_key AND h.res = p_res AND h.space = p_space
		  AND NOT (h.lease = p_lease AND h.owner = p_owner)
		  AND h.r_start <= p_e AND h.r_end >= p_s
		  AND (h.type = 2 OR p_type = 2)
		ORDER BY h.r_start
		LIMIT 1;
END
$$;

-- every holder, then every queued request in FIFO order, of one resource
-- (p_res NULL: of all), leaving out those of dead leases.  Read only: one
-- snapshot, no lock taken.
CREATE FUNCTION @SCHEMA@.list(p_res bytea)
RETURNS TABLE (o_kind text, o_res bytea, o_space smallint, o_type smallint,
	       o_start numeric, o_end numeric, o_lease bigint,
	       o_owner bigint, o_pid integer, o_token bigint, o_since bigint,
	       o_host text)
LANGUAGE sql AS $$
	SELECT kind, res, space, type, r_start, r_end, lease, owner, pid,
	       token, since, host
	FROM (
		SELECT 'g' AS kind, h.res, h.space, h.type, h.r_start, h.r_end,
		       h.lease, h.owner, h.pid, h.token,
		       @SCHEMA@.ms(h.granted_at) AS since, h.host,
		       0 AS seq
		FROM @SCHEMA@.held h JOIN @SCHEMA@.leases l ON l.id = h.lease
		WHERE (p_res IS NULL OR
		       (h.rkey = @SCHEMA@.res_key(p_res) AND h.res = p_res))
		  AND l.expires > clock_timestamp()
		UNION ALL
		SELECT 'w', q.res, q.space, q.type, q.r_start, q.r_end,
		       q.lease, q.owner, q.pid, 0, @SCHEMA@.ms(q.since),
		       l.host, q.seq
		FROM @SCHEMA@.queue q JOIN @SCHEMA@.leases l ON l.id = q.lease
		WHERE (p_res IS NULL OR
		       (q.rkey = @SCHEMA@.res_key(p_res) AND q.res = p_res))
		  AND l.expires > clock_timestamp()
	) x
	ORDER BY kind, CASE WHEN kind = 'g' THEN res END, seq, space, lease,
		 owner, r_start
$$;

-- An administrator removes every granted lock of a resource (what
-- `dlockctl break` does).  Each holder's daemon is told: 'B' on its lease
-- channel at once, and the broken entry with every renewal for two lease
-- periods (it then reports the lock lost: user.dlock.locks says "lost",
-- writes through it fail with EIO).  Then the queued requests are served.
-- Returns the number of holders (owners) whose locks were removed.
--   SELECT dlock.break_lock('path/relative/to/the/mount');
--   SELECT dlock.break_lock('\x6e616d65'::bytea);   -- any bytes
CREATE FUNCTION @SCHEMA@.break_lock(p_res bytea) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
	v_n integer := 0;
	o record;
BEGIN
	PERFORM pg_advisory_xact_lock(v_key);
	PERFORM @SCHEMA@.purge(v_key, p_res);
	FOR o IN
		SELECT h.lease, h.space, h.owner, max(h.token) AS max_token
		FROM @SCHEMA@.held h
		WHERE h.rkey = v_key AND h.res = p_res
		GROUP BY h.lease, h.space, h.owner
	LOOP
		INSERT INTO @SCHEMA@.broken VALUES (
			o.lease, o.space, o.owner, p_res, o.max_token,
			clock_timestamp());
		PERFORM pg_notify(l.channel, 'B ' || o.lease)
		FROM @SCHEMA@.leases l WHERE l.id = o.lease;
		v_n := v_n + 1;
	END LOOP;
	DELETE FROM @SCHEMA@.held h WHERE h.rkey = v_key AND h.res = p_res;
	PERFORM @SCHEMA@.handoff(v_key, p_res);
	RETURN v_n;
END
$$;

CREATE FUNCTION @SCHEMA@.break_lock(p_path text) RETURNS integer
LANGUAGE sql AS $$
	SELECT @SCHEMA@.break_lock(convert_to(p_path, 'UTF8'))
$$;

-- ------------------------------------------------------------ leases

-- forget leases dead for an hour (long past any lock-delay) and the
-- records of leases that are gone
CREATE FUNCTION @SCHEMA@.gc() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM @SCHEMA@.leases
	WHERE expires < clock_timestamp() - interval '1 hour';
	DELETE FROM @SCHEMA@.held h WHERE NOT EXISTS (
		SELECT 1 FROM @SCHEMA@.leases l WHERE l.id = h.lease);
	DELETE FROM @SCHEMA@.queue q WHERE NOT EXISTS (
		SELECT 1 FROM @SCHEMA@.leases l WHERE l.id = q.lease);
	DELETE FROM @SCHEMA@.handed x WHERE NOT EXISTS (
		SELECT 1 FROM @SCHEMA@.leases l WHERE l.id = x.lease);
	DELETE FROM @SCHEMA@.broken b WHERE NOT EXISTS (
		SELECT 1 FROM @SCHEMA@.leases l WHERE l.id = b.lease);
	DELETE FROM @SCHEMA@.delays WHERE until < clock_timestamp();
END
$$;

-- a fresh lease for a daemon incarnation p_inc (16 hex digits) -> its
-- id; the daemon LISTENs on channel SCHEMA_INC for all its leases
CREATE FUNCTION @SCHEMA@.reg(p_host text, p_pid integer, p_inc text,
			     p_ttl integer, p_delay integer)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	v_now timestamptz := clock_timestamp();
	v_id bigint;
BEGIN
	PERFORM @SCHEMA@.gc();
	IF p_inc !~ '^[0-9a-f]{16}$' THEN
		RAISE EXCEPTION 'dlockfs: bad incarnation %', p_inc;
	END IF;
	INSERT INTO @SCHEMA@.leases (host, pid, incarnation, channel, ttl_ms,
				     lock_delay_ms, created, renewed, expires)
	VALUES (p_host, p_pid, p_inc, '@SCHEMA@_' || p_inc, p_ttl, p_delay,
		v_now, v_now,
		v_now + p_ttl * interval '1 millisecond')
	RETURNING id INTO v_id;
	RETURN v_id;
END
$$;

-- renew a lease, forgetting the grants p_acks its daemon has received
-- -> first row 'R' (renewed) or 'X' (gone or expired: never revived);
-- then 'B' rows: locks of the lease an administrator broke, with the
-- newest token each covered
CREATE FUNCTION @SCHEMA@.renew(p_lease bigint, p_acks bigint[])
RETURNS TABLE (o_kind text, o_space smallint, o_owner bigint, o_res bytea,
	       o_token bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_now timestamptz := clock_timestamp();
	v_ttl integer;
BEGIN
	UPDATE @SCHEMA@.leases
	SET renewed = v_now,
	    expires = v_now + ttl_ms * interval '1 millisecond'
	WHERE id = p_lease AND expires > v_now
	RETURNING ttl_ms INTO v_ttl;
	IF NOT FOUND THEN
		o_kind := 'X';
		RETURN NEXT;
		RETURN;
	END IF;
	IF cardinality(p_acks) > 0 THEN
		DELETE FROM @SCHEMA@.handed
		WHERE lease = p_lease AND wait_id = ANY (p_acks);
	END IF;
	DELETE FROM @SCHEMA@.broken
	WHERE lease = p_lease
	  AND at < v_now - 2 * v_ttl * interval '1 millisecond';
	o_kind := 'R';
	RETURN NEXT;
	RETURN QUERY
		SELECT 'B', b.space, b.owner, b.res, b.max_token
		FROM @SCHEMA@.broken b WHERE b.lease = p_lease;
	IF random() < 0.01 THEN
		PERFORM @SCHEMA@.gc();
	END IF;
END
$$;

-- end a lease now: its daemon gave its locks up (a clean stop, or it
-- reported them lost).  Its records are purged, without a lock-delay, by
-- the next operation on each resource; its waiters' daemons find them in
-- their safety re-check.
CREATE FUNCTION @SCHEMA@.drop_lease(p_lease bigint) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM @SCHEMA@.leases WHERE id = p_lease;
	DELETE FROM @SCHEMA@.handed WHERE lease = p_lease;
	DELETE FROM @SCHEMA@.broken WHERE lease = p_lease;
	RETURN 0;
END
$$;

-- ------------------------------------------------------------ views

CREATE VIEW @SCHEMA@.locks AS
	SELECT @SCHEMA@.res_text(h.res) AS resource,
	       CASE h.space WHEN 0 THEN 'flock' ELSE 'posix' END AS space,
	       CASE h.type WHEN 1 THEN 'shared' ELSE 'exclusive' END AS mode,
	       h.r_start || '-' ||
		       CASE WHEN h.r_end = 18446744073709551615 THEN 'EOF'
			    ELSE h.r_end::text END AS range,
	       h.host, h.pid, h.token, h.granted_at AS since,
	       h.lease, to_hex(h.owner) AS owner, l.expires AS lease_expires,
	       h.res AS resource_bytes
	FROM @SCHEMA@.held h JOIN @SCHEMA@.leases l ON l.id = h.lease
	WHERE l.expires > clock_timestamp();

CREATE VIEW @SCHEMA@.waiters AS
	SELECT @SCHEMA@.res_text(q.res) AS resource,
	       CASE q.space WHEN 0 THEN 'flock' ELSE 'posix' END AS space,
	       CASE q.type WHEN 1 THEN 'shared' ELSE 'exclusive' END AS mode,
	       q.r_start || '-' ||
		       CASE WHEN q.r_end = 18446744073709551615 THEN 'EOF'
			    ELSE q.r_end::text END AS range,
	       l.host, q.pid, q.since, q.seq, q.lease,
	       to_hex(q.owner) AS owner, q.res AS resource_bytes
	FROM @SCHEMA@.queue q JOIN @SCHEMA@.leases l ON l.id = q.lease
	WHERE l.expires > clock_timestamp();

COMMENT ON VIEW @SCHEMA@.locks IS
	'dlockfs: granted locks (range: first-last byte, EOF = to end of file)';
COMMENT ON FUNCTION @SCHEMA@.break_lock(text) IS
	'dlockfs: remove every lock of a path (relative to the mount root); '
	'the holders'' daemons report them lost';

-- @@ version 2

-- Ask every other daemon that holds a lock on the resource (either space)
-- to give it back (ops->poke, for the same-host cache): 'P RES' on the
-- channel of each, once per daemon however many leases and owners it
-- holds the resource with; RES is the resource in base64 without line
-- breaks, so any bytes travel in the text payload (its 8000-byte limit
-- allows names up to 5997 bytes; the daemon does not send longer ones).
-- The caller's own daemon (incarnation p_inc, any of its leases) is left
-- out, and so are dead leases.  Read only, no lock taken: a grant that
-- commits after this statement's snapshot is not told, and a waiter
-- pokes again.  Returns the number of daemons told (delivered at commit).
CREATE FUNCTION @SCHEMA@.poke(p_inc text, p_res bytea) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
	v_msg text := 'P ' || translate(encode(p_res, 'base64'), chr(10), '');
	v_n integer := 0;
	d record;
BEGIN
	FOR d IN
		SELECT DISTINCT l.channel
		FROM @SCHEMA@.held h JOIN @SCHEMA@.leases l ON l.id = h.lease
		WHERE h.rkey = v_key AND h.res = p_res
		  AND l.incarnation <> p_inc
		  AND l.expires > clock_timestamp()
	LOOP
		PERFORM pg_notify(d.channel, v_msg);
		v_n := v_n + 1;
	END LOOP;
	RETURN v_n;
END
$$;

-- @@ version 3

-- The version of a resource's content (optimistic concurrency, README
-- "Optimistic updates"), kept next to its locks but apart from them: a
-- row has no lease, and nothing that purges (purge(), gc(), break_lock(),
-- drop_lease()) touches this table, so a version outlives every daemon.
-- One row per resource ever bumped (none: version 0), found as the lock
-- tables find theirs: res_key() for the index, then the bytes compared.
-- bump_id is the id of the last bump (its daemon's incarnation and a
-- number; NULL from SQL): a bump asked again after its answer was lost
-- finds itself there and is not counted twice (unless another bump came
-- in between: then it counts again, one too many but never one lost).
CREATE TABLE @SCHEMA@.res_versions (
	rkey bigint NOT NULL,
	res bytea NOT NULL,
	version bigint NOT NULL CHECK (version > 0),
	host text NOT NULL,
	changed timestamptz NOT NULL,
	bump_id text
);
CREATE INDEX res_versions_rkey ON @SCHEMA@.res_versions (rkey);

-- Add one to the version of p_res, recording the host and the server's
-- time -> the version after it.  Not INSERT ... ON CONFLICT: that needs a
-- unique btree index, and a btree entry cannot hold a whole path (at most
-- about 2700 bytes, a path may have 4095), while a unique index on the
-- hash alone would let two names share a version.  Instead, as every
-- other operation on a resource, it first takes the resource's advisory
-- lock: two bumps of one resource run one after the other, the second
-- sees the first's row (each statement of a PL/pgSQL function takes a
-- new snapshot), so no bump is lost and there is one row per resource.
--   SELECT * FROM dlock.bump('operator', 'path/relative/to/the/mount');
CREATE FUNCTION @SCHEMA@.bump(p_host text, p_res bytea,
			      p_id text DEFAULT NULL,
			      OUT o_version bigint, OUT o_host text,
			      OUT o_changed bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
	v_now timestamptz := clock_timestamp();
BEGIN
	PERFORM pg_advisory_xact_lock(v_key);
	SELECT v.version, v.host, @SCHEMA@.ms(v.changed)
	INTO o_version, o_host, o_changed
	FROM @SCHEMA@.res_versions v
	WHERE v.rkey = v_key AND v.res = p_res AND v.bump_id = p_id;
	IF FOUND THEN
		RETURN; -- this bump, asked again: it ran already
	END IF;
	UPDATE @SCHEMA@.res_versions v
	SET version = v.version + 1, host = p_host, changed = v_now,
	    bump_id = p_id
	WHERE v.rkey = v_key AND v.res = p_res
	RETURNING v.version, v.host, @SCHEMA@.ms(v.changed)
	INTO o_version, o_host, o_changed;
	IF NOT FOUND THEN
		INSERT INTO @SCHEMA@.res_versions
		VALUES (v_key, p_res, 1, p_host, v_now, p_id)
		RETURNING version, host, @SCHEMA@.ms(changed)
		INTO o_version, o_host, o_changed;
	END IF;
END
$$;

-- the version of one resource (no row: never bumped).  Read only, no
-- lock taken: the last committed bump.
CREATE FUNCTION @SCHEMA@.version_of(p_res bytea,
				    OUT o_version bigint, OUT o_host text,
				    OUT o_changed bigint)
RETURNS SETOF record LANGUAGE sql STABLE AS $$
	SELECT v.version, v.host, @SCHEMA@.ms(v.changed)
	FROM @SCHEMA@.res_versions v
	WHERE v.rkey = @SCHEMA@.res_key(p_res) AND v.res = p_res
$$;

CREATE VIEW @SCHEMA@.versions AS
	SELECT @SCHEMA@.res_text(v.res) AS resource, v.version, v.host,
	       v.changed, v.res AS resource_bytes
	FROM @SCHEMA@.res_versions v;

COMMENT ON VIEW @SCHEMA@.versions IS
	'dlockfs: the version of each file''s content, bumped by one each '
	'time a change through a mount becomes visible (never bumped: no row)';

-- @@ version 4

-- Fast paths (the same arguments, results and effects; fewer statements
-- on the server).  lock() and purge() of version 1 are kept, renamed
-- lock_full() and purge_all(), behind new ones that first take one look
-- at the resource and do the full work only when it can change the
-- answer; unlock() and release() are replaced:
--   purge()    one read when no record of a dead lease is there (nearly
--              always), instead of two deletes;
--   lock()     one read tells the caller's lease, whether a live lock
--              blocks the request and whether the owner has locks there;
--              a dead lease's record, a lock-delay or a flock conversion
--              takes lock_full();
--   unlock(), release()  purge only when a dead lease's record is there,
--              hand over only when someone is queued.
-- A plan prepared before the upgrade calls the renamed function, which
-- is still right.

ALTER FUNCTION @SCHEMA@.purge(bigint, bytea) RENAME TO purge_all;
ALTER FUNCTION @SCHEMA@.lock(bigint, bytea, smallint, smallint, numeric,
			     numeric, bigint, integer, bigint)
	RENAME TO lock_full;

-- one look at the resource: is there a record of a dead lease (expired,
-- or gone), held or queued?  is anyone queued?
CREATE FUNCTION @SCHEMA@.look(p_key bigint, p_res bytea,
			      OUT o_dead boolean, OUT o_waiters boolean)
LANGUAGE plpgsql AS $$
BEGIN
	SELECT EXISTS (
		SELECT 1 FROM @SCHEMA@.held h
		LEFT JOIN @SCHEMA@.leases l ON l.id = h.lease
		WHERE h.rkey = p_key AND h.res = p_res
		  AND (l.id IS NULL OR l.expires <= clock_timestamp()))
	    OR EXISTS (
		SELECT 1 FROM @SCHEMA@.queue q
		LEFT JOIN @SCHEMA@.leases l ON l.id = q.lease
		WHERE q.rkey = p_key AND q.res = p_res
		  AND (l.id IS NULL OR l.expires <= clock_timestamp())),
	       EXISTS (SELECT 1 FROM @SCHEMA@.queue q
		       WHERE q.rkey = p_key AND q.res = p_res)
	INTO o_dead, o_waiters;
END
$$;

CREATE FUNCTION @SCHEMA@.purge(p_key bigint, p_res bytea) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	IF (@SCHEMA@.look(p_key, p_res)).o_dead THEN
		RETURN @SCHEMA@.purge_all(p_key, p_res);
	END IF;
	RETURN false;
END
$$;

CREATE FUNCTION @SCHEMA@.lock(p_lease bigint, p_res bytea, p_space smallint,
			      p_type smallint, p_s numeric, p_e numeric,
			      p_owner bigint, p_pid integer, p_wait bigint,
			      OUT r integer, OUT token bigint)
LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
	v_host text;
	v_full boolean;
	v_blocked boolean;
	v_mine boolean;
	v_freed boolean := false;
BEGIN
	PERFORM pg_advisory_xact_lock(v_key);
	SELECT (SELECT l.host FROM @SCHEMA@.leases l
		WHERE l.id = p_lease AND l.expires > clock_timestamp()),
	       coalesce(bool_or(x.id IS NULL
				OR x.expires <= clock_timestamp()
				OR (p_space = 0 AND h.space = 0
				    AND h.lease = p_lease
				    AND h.owner = p_owner)), false)
	       OR EXISTS (SELECT 1 FROM @SCHEMA@.delays d
			  WHERE d.rkey = v_key AND d.res = p_res),
	       coalesce(bool_or(h.space = p_space
				AND NOT (h.lease = p_lease
					 AND h.owner = p_owner)
				AND h.r_start <= p_e AND h.r_end >= p_s
				AND (h.type = 2 OR p_type = 2)), false),
	       coalesce(bool_or(h.space = p_space AND h.lease = p_lease
				AND h.owner = p_owner), false)
	INTO v_host, v_full, v_blocked, v_mine
	FROM @SCHEMA@.held h LEFT JOIN @SCHEMA@.leases x ON x.id = h.lease
	WHERE h.rkey = v_key AND h.res = p_res;
	IF v_host IS NULL THEN
		r := -1;
		RETURN;
	END IF;
	IF v_full THEN
		SELECT f.r, f.token INTO r, token
		FROM @SCHEMA@.lock_full(p_lease, p_res, p_space, p_type, p_s,
					p_e, p_owner, p_pid, p_wait) f;
		RETURN;
	END IF;
	IF v_blocked THEN
		IF p_wait IS NULL THEN
			r := 0;
			RETURN;
		END IF;
		INSERT INTO @SCHEMA@.queue (rkey, res, space, lease, wait_id,
					    owner, pid, type, r_start, r_end,
					    since)
		VALUES (v_key, p_res, p_space, p_lease, p_wait, p_owner, p_pid,
			p_type, p_s, p_e, clock_timestamp())
		ON CONFLICT (lease, wait_id) DO NOTHING;
		r := 2;
		RETURN;
	END IF;
	token := nextval('@SCHEMA@.token_seq');
	IF v_mine THEN
		v_freed := @SCHEMA@.apply(v_key, p_res, p_space, p_lease,
					  p_owner, p_type, p_s, p_e, token,
					  p_pid, v_host, NULL);
	ELSE
		INSERT INTO @SCHEMA@.held VALUES (
			v_key, p_res, p_space, p_lease, p_owner, v_host, p_pid,
			p_type, p_s, p_e, token, clock_timestamp());
	END IF;
	IF p_wait IS NOT NULL THEN
		DELETE FROM @SCHEMA@.queue q
		WHERE q.lease = p_lease AND q.wait_id = p_wait;
	END IF;
	IF v_freed THEN
		PERFORM @SCHEMA@.handoff(v_key, p_res);
	END IF;
	r := 1;
END
$$;

-- does the owner still hold something on the resource in the space?
CREATE FUNCTION @SCHEMA@.holds(p_key bigint, p_res bytea, p_space smallint,
			       p_lease bigint, p_owner bigint)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
	RETURN EXISTS (SELECT 1 FROM @SCHEMA@.held h
		       WHERE h.rkey = p_key AND h.res = p_res
			 AND h.space = p_space AND h.lease = p_lease
			 AND h.owner = p_owner)::integer;
END
$$;

CREATE OR REPLACE FUNCTION @SCHEMA@.unlock(p_lease bigint, p_res bytea,
					   p_space smallint, p_s numeric,
					   p_e numeric, p_owner bigint,
					   p_max bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
	v_dead boolean;
	v_wait boolean;
BEGIN
	PERFORM pg_advisory_xact_lock(v_key);
	SELECT o_dead, o_waiters INTO v_dead, v_wait
	FROM @SCHEMA@.look(v_key, p_res);
	IF v_dead THEN
		PERFORM @SCHEMA@.purge_all(v_key, p_res);
	END IF;
	-- a lock cut in two (or trimmed) takes apply(); one inside the
	-- range just goes
	IF EXISTS (SELECT 1 FROM @SCHEMA@.held h
		   WHERE h.rkey = v_key AND h.res = p_res
		     AND h.space = p_space AND h.lease = p_lease
		     AND h.owner = p_owner
		     AND h.r_start <= p_e AND h.r_end >= p_s
		     AND (h.r_start < p_s OR h.r_end > p_e)
		     AND (p_max IS NULL OR h.token <= p_max)) THEN
		PERFORM @SCHEMA@.apply(v_key, p_res, p_space, p_lease, p_owner,
				       0::smallint, p_s, p_e, 0, 0, '', p_max);
	ELSE
		DELETE FROM @SCHEMA@.held h
		WHERE h.rkey = v_key AND h.res = p_res AND h.space = p_space
		  AND h.lease = p_lease AND h.owner = p_owner
		  AND h.r_start >= p_s AND h.r_end <= p_e
		  AND (p_max IS NULL OR h.token <= p_max);
	END IF;
	IF v_wait THEN
		PERFORM @SCHEMA@.handoff(v_key, p_res);
	END IF;
	RETURN @SCHEMA@.holds(v_key, p_res, p_space, p_lease, p_owner);
END
$$;

CREATE OR REPLACE FUNCTION @SCHEMA@.release(p_lease bigint, p_res bytea,
					    p_space smallint, p_owner bigint,
					    p_max bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
	v_key bigint := @SCHEMA@.res_key(p_res);
	v_dead boolean;
	v_wait boolean;
BEGIN
	PERFORM pg_advisory_xact_lock(v_key);
	SELECT o_dead, o_waiters INTO v_dead, v_wait
	FROM @SCHEMA@.look(v_key, p_res);
	IF v_dead THEN
		PERFORM @SCHEMA@.purge_all(v_key, p_res);
	END IF;
	DELETE FROM @SCHEMA@.held h
	WHERE h.rkey = v_key AND h.res = p_res AND h.space = p_space
	  AND h.lease = p_lease AND h.owner = p_owner
	  AND (p_max IS NULL OR h.token <= p_max);
	IF v_wait THEN
		PERFORM @SCHEMA@.handoff(v_key, p_res);
	END IF;
	IF p_max IS NULL THEN
		RETURN 0;
	END IF;
	RETURN @SCHEMA@.holds(v_key, p_res, p_space, p_lease, p_owner);
END
$$;

-- Plain index scans, not bitmap scans, in every operation on a resource.
-- Each lock and release leaves a dead row version behind in held and
-- queue; a plain index scan marks the index entries of rows dead to
-- everyone as dead (the next page split drops them), a bitmap scan never
-- does.  A table that takes many locks a second between two autovacuums
-- (a minute apart) then keeps thousands of dead entries under one
-- resource's key, and each operation on it reads them all: a cross-host
-- handoff went from 1.6 to 3.5 ms in a minute.
ALTER FUNCTION @SCHEMA@.lock(bigint, bytea, smallint, smallint, numeric,
			     numeric, bigint, integer, bigint)
	SET enable_bitmapscan = off;
ALTER FUNCTION @SCHEMA@.unlock(bigint, bytea, smallint, numeric, numeric,
			       bigint, bigint)
	SET enable_bitmapscan = off;
ALTER FUNCTION @SCHEMA@.release(bigint, bytea, smallint, bigint, bigint)
	SET enable_bitmapscan = off;
ALTER FUNCTION @SCHEMA@.cancel(bigint, bytea, bigint)
	SET enable_bitmapscan = off;
ALTER FUNCTION @SCHEMA@.poll(bigint, bytea, bigint[])
	SET enable_bitmapscan = off;
ALTER FUNCTION @SCHEMA@.getlk(bigint, bytea, smallint, smallint, numeric,
			      numeric, bigint)
	SET enable_bitmapscan = off;
ALTER FUNCTION @SCHEMA@.break_lock(bytea) SET enable_bitmapscan = off;
ALTER FUNCTION @SCHEMA@.poke(text, bytea) SET enable_bitmapscan = off;
ALTER FUNCTION @SCHEMA@.bump(text, bytea, text) SET enable_bitmapscan = off;
