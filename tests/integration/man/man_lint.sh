#!/usr/bin/env bash
# man_lint.sh - the manual pages in contrib/man are clean and complete.
#
#  1. `mandoc -T lint -W warning` reports nothing for any page.
#  2. `groff -man -ww -z` warns about nothing (skipped when groff is not
#     installed: CI installs only contrib/deps.sh, which has mandoc).
#  3. What the code accepts is documented, in bold (.B, .BR, .BI, .RB,
#     .IB or \fB...), names taken from the sources so that a new option
#     fails this test until it is documented:
#       dlockfs.8           every entry of fs/main.c's fuse_opt tables
#                           (-o options and command-line flags), every
#                           literal or array entry fs/main.c compares an
#                           option with (strcmp(arg, "...") or
#                           strcmp(arg, names[i])), every backend URI
#                           query parameter of backend/*/uri.c
#       dlockfs.conf.5      every config key the daemon reads
#                           (dl_config_get, main_pick, ctlpol_uint; a
#                           literal, or an array of them indexed)
#       dlockctl.8          every subcommand (strcmp(cmd, "...")), long and
#                           short option, and environment variable of
#                           fs/dlockctl/*.c
#       libdlock_preload.8  every environment variable of preload/shim.c
#     and dlockfs.8 keeps its "MOUNTING FROM FSTAB AND SYSTEMD" section,
#     each page is installed by contrib/man/meson.build, and each page's
#     .TH names the project's version.
#
# Needs mandoc and python3 (both in contrib/deps.sh); takes well under a
# second.  No mount, no daemon.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
dl_init man_lint

src=${DLOCKFS_SRC:-$(cd "$here/../../.." && pwd)}
mandir=$src/contrib/man
pages=(dlockfs.8 dlockfs.conf.5 dlockctl.8 libdlock_preload.8)

dl_require_prog mandoc python3

for p in "${pages[@]}"; do
	[[ -f $mandir/$p ]] || dl_fail "missing page contrib/man/$p"
done

# 1. mandoc: any message at level warning or above fails
for p in "${pages[@]}"; do
	rc=0
	out=$(mandoc -T lint -W warning "$mandir/$p" 2>&1) || rc=$?
	if [[ $rc -ne 0 || -n $out ]]; then
		printf '%s\n' "$out" >&2
		dl_fail "mandoc -T lint -W warning $p: exit status $rc"
	fi
done
dl_log "mandoc lint: ${#pages[@]} pages clean"

# 2. groff, all warnings on, output discarded
if command -v groff >/dev/null 2>&1; then
	for p in "${pages[@]}"; do
		rc=0
		out=$(groff -man -ww -z -T utf8 "$mandir/$p" 2>&1) || rc=$?
		if [[ $rc -ne 0 || -n $out ]]; then
			printf '%s\n' "$out" >&2
			dl_fail "groff -man -ww -z $p: exit status $rc"
		fi
	done
	dl_log "groff -ww: ${#pages[@]} pages clean"
else
	dl_log "groff is not installed: its check is skipped"
fi

# 3. the code's names are documented
python3 - "$src" <<'PYEOF' || dl_fail "undocumented names (see above)"
import os
import re
import sys

src = sys.argv[1]
problems = []


def read(rel):
    with open(os.path.join(src, rel), encoding="utf-8", errors="replace") as f:
        return f.read()


def c_code(rel):
    """the C file without its comments (string literals kept)"""
    text = read(rel)
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def sources(*dirs):
    for d in dirs:
        for root, _, files in os.walk(os.path.join(src, d)):
            for f in sorted(files):
                if f.endswith(".c"):
                    yield os.path.relpath(os.path.join(root, f), src)


ESCAPES = [("\\-", "-"), ("\\&", ""), ("\\e", "\\"), ("\\(lq", '"'),
           ("\\(rq", '"'), ("\\~", " "), ("\\ ", " "), ("\\c", ""),
           ("\\|", ""), ("\\^", "")]


def unescape(s):
    for a, b in ESCAPES:
        s = s.replace(a, b)
    return s


def macro_args(s):
    """split roff macro arguments: blanks separate, "..." quotes"""
    args, i, n = [], 0, len(s)
    while i < n:
        if s[i] in " \t":
            i += 1
            continue
        if s[i] == '"':
            j = i + 1
            buf = []
            while j < n:
                if s[j] == '"' and j + 1 < n and s[j + 1] == '"':
                    buf.append('"')
                    j += 2
                    continue
                if s[j] == '"':
                    break
                buf.append(s[j])
                j += 1
            args.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and s[j] not in " \t":
                j += 2 if s[j] == "\\" and j + 1 < n else 1
            args.append(s[i:j])
            i = j
    return args


def bold_runs(text, bold):
    """the bold pieces of @text, which starts bold or not (\\fX switch)"""
    runs, cur = [], []
    prev = start = bold
    i, n = 0, len(text)
    while i < n:
        if text.startswith("\\f", i) and i + 2 < n:
            if text[i + 2] == "[":
                j = text.find("]", i + 3)
                font = text[i + 3:j] if j > 0 else "R"
                i = j + 1 if j > 0 else n
            elif text[i + 2] == "(":
                font = text[i + 3:i + 5]
                i += 5
            else:
                font = text[i + 2]
                i += 3
            new = {"B": True, "I": False, "R": False, "P": prev}.get(
                font, start)
            if bold and not new:
                runs.append("".join(cur))
                cur = []
            prev, bold = bold, new
            continue
        if bold:
            cur.append(text[i])
        i += 1
    if bold:
        runs.append("".join(cur))
    return runs


ALTERNATING = {"BI": (True, False), "BR": (True, False),
               "IB": (False, True), "RB": (False, True),
               "IR": (False, False), "RI": (False, False)}


def bold_text(page):
    """every bold run of the page, unescaped, one per line"""
    runs, in_example = [], False
    for line in read(os.path.join("contrib/man", page)).splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        m = re.match(r"^[.'](\w+)\s*(.*)$", line)
        if m and m.group(1) in ("EX", "nf"):
            in_example = True
            continue
        if m and m.group(1) in ("EE", "fi"):
            in_example = False
            continue
        if in_example:
            continue
        if not m:
            runs += bold_runs(line, False)
            continue
        name, rest = m.group(1), m.group(2)
        if name == "B":
            runs += bold_runs(rest, True)
        elif name in ALTERNATING:
            for k, arg in enumerate(macro_args(rest)):
                runs += bold_runs(arg, ALTERNATING[name][k % 2])
        else:
            for arg in macro_args(rest):
                runs += bold_runs(arg, False)
    return "\n".join(unescape(r) for r in runs)


def documented(bold, name, flag):
    """@name a word of @bold; a @flag (an option without a value) must
    not be followed by '=' (owner is not owner=)"""
    pat = r"(?<![\w.-])" + re.escape(name)
    if re.match(r"\w", name[-1]):
        pat += r"(?![\w.=-])" if flag else r"(?![\w.-])"
    return re.search(pat, bold) is not None


def check(page, what, names, origin, flags=False):
    if not names:
        problems.append("%s: found no %s in %s; update man_lint.sh"
                        % (page, what, origin))
        return
    bold = bold_text(page)
    for name in sorted(set(names)):
        if not documented(bold, name, flags):
            problems.append("%s does not document %s '%s' (from %s); "
                            "write it in bold (.B %s)"
                            % (page, what, name, origin, name))


def literals(body):
    return re.findall(r'"((?:[^"\\]|\\.)*)"', body)


# ---- dlockfs.8: fs/main.c's options --------------------------------------
main_c = c_code("fs/main.c")
opts = []
for body in re.findall(r"struct\s+fuse_opt\s+\w+\s*\[\s*\]\s*=\s*\{(.*?)\}\s*;",
                       main_c, re.S):
    # the first string of each entry: MACRO("name", ...) or { "name", ... }
    opts += re.findall(r'(?:\b[A-Z_][A-Z0-9_]*\s*\(|\{)\s*"((?:[^"\\]|\\.)*)"',
                       body)
opts += re.findall(r'\bstr(?:n?case)?n?cmp\s*\(\s*arg\s*,\s*"((?:[^"\\]|\\.)*)"',
                   main_c)
# and the arrays it compares an option with: strcmp(arg, flags[i])
for arr in set(re.findall(r'\bstr(?:n?case)?n?cmp\s*\(\s*arg\s*,\s*(\w+)\s*\[',
                          main_c)):
    for body in re.findall(r"\b%s\s*\[\s*\w*\s*\]\s*=\s*\{(.*?)\}" % arr,
                           main_c, re.S):
        opts += literals(body)
opts = [re.sub(r"%[a-z]+$", "", o) for o in opts]
opts = [o for o in opts if o.strip("-=")]
check("dlockfs.8", "option", opts, "fs/main.c", flags=True)

uri_keys = []
for rel in sources("backend"):
    if os.path.basename(rel) != "uri.c" or "/util/" in rel:
        continue
    code = c_code(rel)
    keys = re.findall(r'\{\s*"([a-z][a-z0-9_]*)"\s*,\s*-?\d', code)
    for body in re.findall(r"key_names\s*\[[^\]]*\]\s*=\s*\{(.*?)\}", code,
                           re.S):
        keys += literals(body)
    keys += re.findall(r'\bstrncmp\s*\(\s*\w+\s*,\s*"([a-z][a-z0-9_]*)="',
                       code)
    if not keys:
        problems.append("found no URI query parameter in %s; update "
                        "man_lint.sh" % rel)
    uri_keys += [k + "=" for k in keys]
check("dlockfs.8", "URI query parameter", uri_keys, "backend/*/uri.c")

if not re.search(r'^\.SH\s+"MOUNTING FROM FSTAB AND SYSTEMD"\s*$',
                 read("contrib/man/dlockfs.8"), re.M):
    problems.append('dlockfs.8 lacks .SH "MOUNTING FROM FSTAB AND SYSTEMD"')

# ---- dlockfs.conf.5: the config keys ---------------------------------------
conf_keys = []
for rel in sources("fs", "backend"):
    code = c_code(rel)
    conf_keys += re.findall(
        r'\b(?:dl_config_get|main_pick|ctlpol_uint)\s*\([^;"]*"([^"]+)"', code)
    # dl_config_get(cfg, keys[i]): the array's strings
    for arr in set(re.findall(r'\bdl_config_get\s*\([^;,]*,\s*(\w+)\s*\[',
                              code)):
        for body in re.findall(r"\b%s\s*\[\s*\w*\s*\]\s*=\s*\{(.*?)\}" % arr,
                               code, re.S):
            conf_keys += literals(body)
check("dlockfs.conf.5", "config key", conf_keys,
      "dl_config_get/main_pick/ctlpol_uint calls in fs/ and backend/")

# ---- dlockctl.8: subcommands, options, environment -------------------------
ctl_c = "\n".join(c_code(os.path.join("fs/dlockctl", f))
                  for f in sorted(os.listdir(os.path.join(src, "fs/dlockctl")))
                  if f.endswith(".c"))
check("dlockctl.8", "subcommand",
      re.findall(r'\bstrcmp\s*\(\s*cmd\s*,\s*"([^"]+)"\s*\)', ctl_c),
      "fs/dlockctl/*.c")
longs = []
for body in re.findall(r"struct\s+option\s+\w+\s*\[\s*\]\s*=\s*\{(.*?)\}\s*;",
                       ctl_c, re.S):
    longs += re.findall(r'\{\s*"([^"]+)"\s*,\s*\w+_argument', body)
shorts = []
for optstring in re.findall(r'\bgetopt(?:_long)?\s*\([^;]*?"([^"]*)"', ctl_c):
    shorts += [c for c in optstring if c.isalnum()]
check("dlockctl.8", "option",
      ["--" + o for o in longs] + ["-" + o for o in shorts], "fs/dlockctl/*.c")
check("dlockctl.8", "environment variable",
      re.findall(r'\bgetenv\s*\(\s*"([^"]+)"', ctl_c), "fs/dlockctl/*.c")

# ---- libdlock_preload.8: the shim's environment ----------------------------
check("libdlock_preload.8", "environment variable",
      re.findall(r'\bgetenv\s*\(\s*"(DLOCK_[^"]+)"', c_code("preload/shim.c")),
      "preload/shim.c")

# ---- every page installed, and of this version -----------------------------
meson_man = read("contrib/man/meson.build")
m = re.search(r"\bversion\s*:\s*'([^']+)'", read("meson.build"))
for page in ("dlockfs.8", "dlockfs.conf.5", "dlockctl.8",
             "libdlock_preload.8"):
    if "'%s'" % page not in meson_man:
        problems.append("contrib/man/meson.build does not install " + page)
    th = re.search(r"^\.TH\s+(.*)$", read("contrib/man/" + page), re.M)
    if not th:
        problems.append(page + " has no .TH")
    elif m and '"dlockfs %s"' % m.group(1) not in th.group(1):
        problems.append('%s: .TH should name "dlockfs %s"'
                        % (page, m.group(1)))

for p in problems:
    print("man_lint: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PYEOF
dl_log "options, subcommands, keys and variables are all documented"

dl_pass
