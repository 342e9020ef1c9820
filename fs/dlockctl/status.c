/*
 * status.c - `dlockctl status`: the daemon, its backend and its health,
 * from the daemon's STATUS text (key=value lines, the backend's fields in
 * one line of their own).  Shown as aligned "label: value" lines for
 * people, as the daemon's lines (-r), or as one JSON object (-J).
 *
 * It does not interpret the values beyond wording the health and the
 * lease: a key it does not know is still shown, under its own name, after
 * the known ones.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/ctl/proto.h"
#include "fs/dlockctl/cli.h"
#include "fs/dlockctl/commands.h"
#include "fs/dlockctl/conn.h"
#include "fs/dlockctl/text.h"

/* the daemon's status text, parsed: key=value lines */
struct kv {
	char *key, *val;
};

struct kvs {
	struct kv v[64];
	size_t n;
};

/* split @text (modified) into key=value lines; others are skipped */
static void kv_parse(char *text, const char *sep, struct kvs *kv)
{
	char *line, *save = NULL;

	kv->n = 0;
	for (line = strtok_r(text, sep, &save); line;
	     line = strtok_r(NULL, sep, &save)) {
		char *eq = strchr(line, '=');

		if (!eq && kv->n && sep[0] == ' ') {
			/* "health=down (Connection refused)": a value
			 * with spaces goes on */
			for (char *q = line - 1;
			     q >= kv->v[kv->n - 1].val && (!*q || *q == ' ');
			     q--)
				*q = ' ';
			continue;
		}
		if (!eq || kv->n == sizeof(kv->v) / sizeof(kv->v[0]))
			continue;
		*eq = '\0';
		kv->v[kv->n++] = (struct kv){ line, eq + 1 };
	}
}

/* the value of @key in @kv; NULL when it has none */
static const char *kv_get(const struct kvs *kv, const char *key)
{
	for (size_t i = 0; i < kv->n; i++)
		if (strcmp(kv->v[i].key, key) == 0)
			return kv->v[i].val;
	return NULL;
}

/* a value as JSON: a number when it is one (up to 18 digits, maybe with
 * a minus sign), else a string */
static json_t *json_value(const char *v)
{
	size_t d = strspn(v + (v[0] == '-'), "0123456789");

	if (d && d < 19 && !v[(v[0] == '-') + d])
		return json_integer(strtoll(v, NULL, 10));
	return json_string(v);
}

/* print the status as one JSON object: the daemon's keys, and
 * backend_state (the fields of backend_status); 0 or EX_DAEMON after a
 * message */
static int status_json(const struct kvs *kv, const struct kvs *be)
{
	json_t *o = json_object(), *b = json_object();

	for (size_t i = 0; o && i < kv->n; i++)
		json_object_set_new(o, kv->v[i].key, json_value(kv->v[i].val));
	for (size_t i = 0; b && i < be->n; i++)
		json_object_set_new(b, be->v[i].key, json_value(be->v[i].val));
	if (o && b)
		json_object_set_new(o, "backend_state", b);
	else
		json_decref(b);
	return text_json_print(o);
}

/* one line of the status for people */
struct sline {
	const char *label;
	char *text; /* malloc'd */
};

struct slines {
	struct sline v[64];
	size_t n;
};

static void sl_add(struct slines *sl, const char *label, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void sl_add(struct slines *sl, const char *label, const char *fmt, ...)
{
	va_list ap;
	char *t;

	if (sl->n == sizeof(sl->v) / sizeof(sl->v[0]))
		return;
	va_start(ap, fmt);
	if (vasprintf(&t, fmt, ap) >= 0)
		sl->v[sl->n++] = (struct sline){ label, t };
	va_end(ap);
}

/* "ok" and friends in words */
static const char *health_words(const char *h)
{
	static const char *const words[][2] = {
		{ "ok", "healthy" },
		{ "down", "down" },
		{ "connecting", "connecting" },
		{ "expired", "session expired" },
		{ "auth-failed", "authentication failed" },
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcmp(h, words[i][0]) == 0)
			return words[i][1];
	return h;
}

/* labels of the daemon's keys and of the backend's, in the order shown;
 * NULL: shown in status_head() */
static const char *const status_labels[][2] = {
	{ "host_id", NULL },
	{ "mode", NULL },
	{ "mountpoint", NULL },
	{ "backend", NULL },
	{ "guarantee", NULL },
	{ "backend_status", NULL },
	{ "held", "held locks" },
	{ "waiting", "waiting requests" },
	{ "lost", "lost locks" },
	{ "lock_timeout", "lock timeout" },
	{ "socket", "socket" },
	{ "clients", "socket clients" },
	{ "processes", "client processes" },
	{ "descriptions", "descriptions" },
	{ "requests", "requests in flight" },
	{ "version", "version" },
};

static const char *const backend_labels[][2] = {
	{ "health", NULL },
	{ "lease_ms", NULL },
	{ "last_renew_ms_ago", NULL },
	{ "nodes", "backend nodes up" },
	{ "server", "backend server" },
	{ "schema", "backend schema" },
	{ "lease", "backend lease id" },
	{ "session", "backend session" },
	{ "timeout_ms", "session timeout ms" },
	{ "resources", "backend resources" },
	{ "held", "backend held" },
	{ "waiting", "backend waiting" },
	{ "waiters", "backend waiters" },
	{ "retrying", "backend retrying" },
	{ "wakeups", "backend wakeups" },
	{ "sessions_lost", "sessions lost" },
};

#define NLABELS(l) (sizeof(l) / sizeof((l)[0]))

/* the fields of @kv that @labels name, in their order */
static void status_known(struct slines *sl, const struct kvs *kv,
			 const char *const (*labels)[2], size_t nlabels)
{
	for (size_t i = 0; i < nlabels; i++) {
		const char *v = kv_get(kv, labels[i][0]);

		if (!v || !labels[i][1])
			continue;
		if (strcmp(labels[i][0], "lock_timeout") == 0)
			sl_add(sl, labels[i][1],
			       strcmp(v, "0") ? "%s s" : "%.0snone", v);
		else
			sl_add(sl, labels[i][1], "%s", v);
	}
}

/* the fields of @kv that @labels do not know, labelled by their key */
static void status_unknown(struct slines *sl, const struct kvs *kv,
			   const char *const (*labels)[2], size_t nlabels)
{
	for (size_t i = 0; i < kv->n; i++) {
		size_t k = 0;

		while (k < nlabels && strcmp(labels[k][0], kv->v[i].key) != 0)
			k++;
		if (k == nlabels)
			sl_add(sl, kv->v[i].key, "%s", kv->v[i].val);
	}
}

/* the lines that are more than one field, or come first */
static void status_head(struct slines *sl, const struct kvs *kv,
			const struct kvs *be)
{
	const char *mode = kv_get(kv, "mode"), *mnt = kv_get(kv, "mountpoint");
	const char *health = kv_get(be, "health");
	const char *lease = kv_get(be, "lease_ms");
	const char *ago = kv_get(be, "last_renew_ms_ago");

	if (kv_get(kv, "host_id"))
		sl_add(sl, "host", "%s", kv_get(kv, "host_id"));
	if (mode)
		sl_add(sl, "mode", "%s%s%s", mode, mnt ? " on " : "",
		       mnt ? mnt : "");
	sl_add(sl, "backend", "%s (%s)", kv_get(kv, "backend") ?: "?",
	       health ? health_words(health) : "health unknown");
	if (kv_get(kv, "guarantee"))
		sl_add(sl, "guarantee", "%s", kv_get(kv, "guarantee"));
	if (lease && ago && ago[0] == '-')
		sl_add(sl, "lease", "%s ms, never renewed", lease);
	else if (lease && ago)
		sl_add(sl, "lease", "%s ms, renewed %s ms ago", lease, ago);
	else if (lease)
		sl_add(sl, "lease", "%s ms", lease);
}

/* print the status for people: aligned "label: value" lines, escaped */
static void status_print(const struct kvs *kv, const struct kvs *be)
{
	struct slines sl = { .n = 0 };
	size_t w = 0;

	status_head(&sl, kv, be);
	status_known(&sl, be, backend_labels, NLABELS(backend_labels));
	status_known(&sl, kv, status_labels, NLABELS(status_labels));
	status_unknown(&sl, kv, status_labels, NLABELS(status_labels));
	status_unknown(&sl, be, backend_labels, NLABELS(backend_labels));
	for (size_t i = 0; i < sl.n; i++)
		if (strlen(sl.v[i].label) > w)
			w = strlen(sl.v[i].label);
	for (size_t i = 0; i < sl.n; i++) {
		printf("%s:%*s ", sl.v[i].label,
		       (int)(w - strlen(sl.v[i].label)), "");
		text_escape(stdout, sl.v[i].text, strlen(sl.v[i].text), false);
		putchar('\n');
		free(sl.v[i].text);
	}
}

/* ask for the status: its text (malloc'd) in *text; 0 or an exit status
 * after a message */
static int status_text(struct ctl_conn *c, char **text)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_STATUS } }, rep;
	int ret = ctl_call(c, &m, -1, &rep, NULL, NULL);

	if (ret == 0)
		ret = ctl_verdict(&rep, "status");
	if (ret)
		return ret;
	*text = rep.nstr ? strndup(rep.str[0].p, rep.str[0].len) : strdup("");
	return *text ? 0 : cli_fail(EX_DAEMON, "out of memory");
}

/* dlockctl status [-r | -J] */
int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "raw", no_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'J' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl_conn conn;
	struct kvs kv, be;
	char *text, *bs = NULL;
	bool raw = false;
	int opt, ret;

	optind = 0;
	while ((opt = getopt_long(argc, argv, "rJ", opts, NULL)) != -1) {
		if (opt == 'r')
			raw = true;
		else if (opt == 'J')
			g_json = true;
		else
			return cli_usage("bad status option");
	}
	if (optind < argc)
		return cli_usage("status takes no argument");
	if (raw && g_json)
		return cli_usage("--raw and --json exclude each other");
	ret = ctl_connect(&conn, g_socket);
	if (!ret)
		ret = status_text(&conn, &text);
	if (ret)
		return ret;
	if (raw) {
		text_escape(stdout, text, strlen(text), true);
		free(text);
		return 0;
	}
	kv_parse(text, "\n", &kv);
	if (kv_get(&kv, "backend_status"))
		bs = strdup(kv_get(&kv, "backend_status"));
	be.n = 0;
	if (bs)
		kv_parse(bs, " ", &be);
	if (g_json)
		ret = status_json(&kv, &be);
	else
		status_print(&kv, &be);
	free(bs);
	free(text);
	return ret;
}

/* the host id of the daemon: COMMAND is known for its processes only */
char *status_host_id(struct ctl_conn *c)
{
	struct kvs kv;
	char *text, *id = NULL;

	if (status_text(c, &text) != 0)
		return NULL;
	kv_parse(text, "\n", &kv);
	if (kv_get(&kv, "host_id"))
		id = strdup(kv_get(&kv, "host_id"));
	free(text);
	return id;
}
