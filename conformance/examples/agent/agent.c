/* vfiospec-agent: a real-kernel target of the vfiospec protocol (PROTOCOL.md).
 *
 * Reads JSON-lines requests on stdin (or on --device PATH, e.g. a guest's
 * second serial port or a virtio-serial port), performs each trace step with
 * the running kernel's own syscalls (open, close, ioctl, mmap, munmap, sysfs
 * read/write) and answers one JSON line per request.
 *
 * Struct layouts, ioctl numbers, constants and errno names come from
 * layouts.h, generated from reference/uapi.py by gen_layouts.py.
 *
 * Logical names ({g0}, {dev0}, {dev0.cdev}, {m0}, ...) come from --config
 * files (JSON {"names": {...}, "platform": {...}} or key=value lines); they are
 * also the allowlist: a path naming a group, device node, PCI device or mdev
 * that the configuration does not name is refused.
 *
 *   vfiospec-agent [--config FILE]... [--device PATH] [--ready]
 *
 * Static, libc only: builds with gcc -static and powerpc64le-linux-gnu-gcc.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <termios.h>
#include <unistd.h>

#include "layouts.h"

#define AGENT_VERSION "vfiospec-agent 1"

/* ------------------------------------------------------------------ utils */
static void *xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);
	if (!p) {
		fprintf(stderr, "agent: out of memory\n");
		exit(2);
	}
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = xmalloc(strlen(s) + 1);
	strcpy(p, s);
	return p;
}

/* growable string */
struct sb { char *s; size_t n, cap; };

static void sb_add(struct sb *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t c = b->cap ? b->cap * 2 : 256;
		while (c < b->n + n + 1)
			c *= 2;
		b->s = realloc(b->s, c);
		if (!b->s)
			exit(2);
		b->cap = c;
	}
	memcpy(b->s + b->n, s, n);
	b->n += n;
	b->s[b->n] = 0;
}

static void sb_puts(struct sb *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_printf(struct sb *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(tmp))
		n = sizeof(tmp) - 1;
	sb_add(b, tmp, n);
}

static void sb_jstr(struct sb *b, const char *s)
{
	sb_add(b, "\"", 1);
	for (; *s; s++) {
		unsigned char c = *s;
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', c};
			sb_add(b, e, 2);
		} else if (c == '\n') {
			sb_puts(b, "\\n");
		} else if (c == '\t') {
			sb_puts(b, "\\t");
		} else if (c < 0x20 || c == 0x7f) {
			sb_printf(b, "\\u%04x", c);
		} else {
			sb_add(b, (char *)&c, 1);
		}
	}
	sb_add(b, "\"", 1);
}

/* ------------------------------------------------------------------ JSON */
enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct j {
	int t;
	char *s;           /* J_STR text, J_NUM literal */
	int b;             /* J_BOOL */
	int n, cap;        /* J_ARR / J_OBJ */
	struct j **v;
	char **k;          /* J_OBJ keys */
};

static void jfree(struct j *x)
{
	if (!x)
		return;
	for (int i = 0; i < x->n; i++) {
		jfree(x->v[i]);
		if (x->k)
			free(x->k[i]);
	}
	free(x->v);
	free(x->k);
	free(x->s);
	free(x);
}

struct jp { const char *p; const char *err; };

static void jws(struct jp *p)
{
	while (*p->p == ' ' || *p->p == '\t' || *p->p == '\n' || *p->p == '\r')
		p->p++;
}

static void jpush(struct j *x, char *key, struct j *v)
{
	if (x->n == x->cap) {
		x->cap = x->cap ? x->cap * 2 : 8;
		x->v = realloc(x->v, x->cap * sizeof(*x->v));
		if (x->t == J_OBJ)
			x->k = realloc(x->k, x->cap * sizeof(*x->k));
	}
	if (x->t == J_OBJ)
		x->k[x->n] = key;
	x->v[x->n++] = v;
}

static void put_utf8(struct sb *b, unsigned cp)
{
	char o[4];
	if (cp < 0x80) {
		o[0] = cp;
		sb_add(b, o, 1);
	} else if (cp < 0x800) {
		o[0] = 0xc0 | (cp >> 6);
		o[1] = 0x80 | (cp & 0x3f);
		sb_add(b, o, 2);
	} else if (cp < 0x10000) {
		o[0] = 0xe0 | (cp >> 12);
		o[1] = 0x80 | ((cp >> 6) & 0x3f);
		o[2] = 0x80 | (cp & 0x3f);
		sb_add(b, o, 3);
	} else {
		o[0] = 0xf0 | (cp >> 18);
		o[1] = 0x80 | ((cp >> 12) & 0x3f);
		o[2] = 0x80 | ((cp >> 6) & 0x3f);
		o[3] = 0x80 | (cp & 0x3f);
		sb_add(b, o, 4);
	}
}

static char *jparse_str(struct jp *p)
{
	struct sb b = {0};
	sb_add(&b, "", 0);
	p->p++; /* opening quote */
	for (;;) {
		char c = *p->p++;
		if (c == 0) {
			p->err = "unterminated string";
			free(b.s);
			return NULL;
		}
		if (c == '"')
			break;
		if (c != '\\') {
			sb_add(&b, &c, 1);
			continue;
		}
		c = *p->p++;
		switch (c) {
		case 'n': sb_add(&b, "\n", 1); break;
		case 't': sb_add(&b, "\t", 1); break;
		case 'r': sb_add(&b, "\r", 1); break;
		case 'b': sb_add(&b, "\b", 1); break;
		case 'f': sb_add(&b, "\f", 1); break;
		case 'u': {
			unsigned cp = 0;
			for (int i = 0; i < 4; i++) {
				char h = *p->p++;
				if (!isxdigit((unsigned char)h)) {
					p->err = "bad \\u escape";
					free(b.s);
					return NULL;
				}
				cp = cp * 16 + (isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
			}
			if (cp >= 0xd800 && cp < 0xdc00 && p->p[0] == '\\' && p->p[1] == 'u') {
				unsigned lo = (unsigned)strtoul((char[]){p->p[2], p->p[3], p->p[4], p->p[5], 0}, NULL, 16);
				if (lo >= 0xdc00 && lo < 0xe000) {
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					p->p += 6;
				}
			}
			put_utf8(&b, cp);
			break;
		}
		case 0:
			p->err = "unterminated string";
			free(b.s);
			return NULL;
		default: sb_add(&b, &c, 1);
		}
	}
	return b.s;
}

static struct j *jparse_val(struct jp *p, int depth)
{
	struct j *x;
	jws(p);
	if (depth > 64) {
		p->err = "nesting too deep";
		return NULL;
	}
	x = xmalloc(sizeof(*x));
	char c = *p->p;
	if (c == '{' || c == '[') {
		x->t = c == '{' ? J_OBJ : J_ARR;
		char close = c == '{' ? '}' : ']';
		p->p++;
		jws(p);
		if (*p->p == close) {
			p->p++;
			return x;
		}
		for (;;) {
			char *key = NULL;
			jws(p);
			if (x->t == J_OBJ) {
				if (*p->p != '"') {
					p->err = "expected a key";
					goto fail;
				}
				key = jparse_str(p);
				if (!key)
					goto fail;
				jws(p);
				if (*p->p != ':') {
					free(key);
					p->err = "expected ':'";
					goto fail;
				}
				p->p++;
			}
			struct j *v = jparse_val(p, depth + 1);
			if (!v) {
				free(key);
				goto fail;
			}
			jpush(x, key, v);
			jws(p);
			if (*p->p == ',') {
				p->p++;
				continue;
			}
			if (*p->p == close) {
				p->p++;
				return x;
			}
			p->err = "expected ',' or a closing bracket";
			goto fail;
		}
	}
	if (c == '"') {
		x->t = J_STR;
		x->s = jparse_str(p);
		if (!x->s)
			goto fail;
		return x;
	}
	if (c == '-' || isdigit((unsigned char)c)) {
		const char *s = p->p;
		p->p++;
		while (isdigit((unsigned char)*p->p) || *p->p == '.' || *p->p == 'e' || *p->p == 'E' ||
		       *p->p == '+' || *p->p == '-')
			p->p++;
		x->t = J_NUM;
		x->s = strndup(s, p->p - s);
		return x;
	}
	if (!strncmp(p->p, "true", 4)) {
		x->t = J_BOOL;
		x->b = 1;
		p->p += 4;
		return x;
	}
	if (!strncmp(p->p, "false", 5)) {
		x->t = J_BOOL;
		p->p += 5;
		return x;
	}
	if (!strncmp(p->p, "null", 4)) {
		x->t = J_NULL;
		p->p += 4;
		return x;
	}
	p->err = "unexpected character";
fail:
	jfree(x);
	return NULL;
}

static struct j *jparse(const char *s, const char **err)
{
	struct jp p = {s, NULL};
	struct j *x = jparse_val(&p, 0);
	if (x) {
		jws(&p);
		if (*p.p) {
			jfree(x);
			x = NULL;
			p.err = "trailing characters";
		}
	}
	*err = p.err;
	return x;
}

static struct j *jget(const struct j *o, const char *key)
{
	if (!o || o->t != J_OBJ)
		return NULL;
	for (int i = 0; i < o->n; i++)
		if (!strcmp(o->k[i], key))
			return o->v[i];
	return NULL;
}

static const char *jgets(const struct j *o, const char *key)
{
	struct j *v = jget(o, key);
	return v && v->t == J_STR ? v->s : NULL;
}

static void jdump(struct sb *b, const struct j *x)
{
	switch (x->t) {
	case J_NULL: sb_puts(b, "null"); break;
	case J_BOOL: sb_puts(b, x->b ? "true" : "false"); break;
	case J_NUM: sb_puts(b, x->s); break;
	case J_STR: sb_jstr(b, x->s); break;
	case J_ARR:
	case J_OBJ:
		sb_puts(b, x->t == J_ARR ? "[" : "{");
		for (int i = 0; i < x->n; i++) {
			if (i)
				sb_puts(b, ", ");
			if (x->t == J_OBJ) {
				sb_jstr(b, x->k[i]);
				sb_puts(b, ": ");
			}
			jdump(b, x->v[i]);
		}
		sb_puts(b, x->t == J_ARR ? "]" : "}");
	}
}

/* ------------------------------------------------------------------ state */
struct name { char *key, *val; int created; };
static struct name *names;
static int nnames, capnames;
static struct j *platform;          /* from a JSON config */
static char *target_name;

struct fdent { char *name; int fd; };
static struct fdent fds[256];
static int nfds;

struct bufent { char *name; void *addr; size_t len, olen; /* len 0: unmapped */ };
static struct bufent bufs[256];
static int nbufs;

static const char *name_get(const char *key)
{
	for (int i = 0; i < nnames; i++)
		if (!strcmp(names[i].key, key))
			return names[i].val;
	return NULL;
}

static void name_set(const char *key, const char *val, int created)
{
	for (int i = 0; i < nnames; i++)
		if (!strcmp(names[i].key, key)) {
			free(names[i].val);
			names[i].val = xstrdup(val);
			names[i].created = created;
			return;
		}
	if (nnames == capnames) {
		capnames = capnames ? capnames * 2 : 16;
		names = realloc(names, capnames * sizeof(*names));
	}
	names[nnames].key = xstrdup(key);
	names[nnames].val = xstrdup(val);
	names[nnames].created = created;
	nnames++;
}

/* fd names whose open/ioctl was refused: later uses are unsupported too */
static char *refused[64];
static int nrefused;

static int was_refused(const char *name)
{
	for (int i = 0; i < nrefused; i++)
		if (!strcmp(refused[i], name))
			return 1;
	return 0;
}

static int fd_lookup(const char *name)
{
	for (int i = nfds - 1; i >= 0; i--)
		if (fds[i].name && !strcmp(fds[i].name, name))
			return fds[i].fd;
	return -1;
}

static void fd_bind(const char *name, int fd)
{
	if (nfds < 256) {
		fds[nfds].name = name ? xstrdup(name) : NULL;
		fds[nfds].fd = fd;
		nfds++;
	}
}

static void fd_forget(int fd)
{
	for (int i = 0; i < nfds; i++)
		if (fds[i].fd == fd) {
			free(fds[i].name);
			fds[i] = fds[--nfds];
			i--;
		}
}

static struct bufent *buf_lookup(const char *name)
{
	for (int i = nbufs - 1; i >= 0; i--)
		if (!strcmp(bufs[i].name, name))
			return &bufs[i];
	return NULL;
}

/* ------------------------------------------------------------------ errors */
static char errmsg[512];
static int err_is_unsupported;

static int fail(int unsupported, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errmsg, sizeof(errmsg), fmt, ap);
	va_end(ap);
	err_is_unsupported = unsupported;
	return -1;
}

static const char *errno_name(int e)
{
	static char tmp[16];
	for (int i = 0; i < N_LERRNOS; i++)
		if (lerrnos[i].value == e)
			return lerrnos[i].name;
	snprintf(tmp, sizeof(tmp), "E%d", e);
	return tmp;
}

/* ------------------------------------------------------------------ values */
/* open(2) flags by name, with this libc's values for the agent's architecture */
static const struct lconst oflags[] = {
	{"O_RDONLY", O_RDONLY}, {"O_WRONLY", O_WRONLY}, {"O_RDWR", O_RDWR}, {"O_NONBLOCK", O_NONBLOCK},
	{"O_CLOEXEC", O_CLOEXEC}, {"O_EXCL", O_EXCL}, {"O_SYNC", O_SYNC},
};

static int const_lookup(const char *s, uint64_t *v)
{
	for (int i = 0; i < N_LCONSTS; i++)
		if (!strcmp(lconsts[i].name, s)) {
			*v = lconsts[i].value;
			return 0;
		}
	for (size_t i = 0; i < sizeof(oflags) / sizeof(oflags[0]); i++)
		if (!strcmp(oflags[i].name, s)) {
			*v = oflags[i].value;
			return 0;
		}
	return -1;
}

/* An integer: JSON number, "0x..", decimal string, constant name, or a list of flag names. */
static int jint(const struct j *x, uint64_t *v)
{
	char *end;
	if (!x)
		return fail(0, "missing integer");
	if (x->t == J_NUM) {
		if (strpbrk(x->s, ".eE"))
			return fail(0, "not an integer: %s", x->s);
		errno = 0;
		if (x->s[0] == '-')
			*v = (uint64_t)strtoll(x->s, &end, 10);
		else
			*v = strtoull(x->s, &end, 10);
		if (errno || *end)
			return fail(0, "integer out of range: %s", x->s);
		return 0;
	}
	if (x->t == J_STR) {
		if (!const_lookup(x->s, v))
			return 0;
		errno = 0;
		if (x->s[0] == '-')
			*v = (uint64_t)strtoll(x->s, &end, 0);
		else
			*v = strtoull(x->s, &end, 0);
		if (errno || *end || end == x->s)
			return fail(0, "not an integer or a known constant: %s", x->s);
		return 0;
	}
	if (x->t == J_ARR) {
		*v = 0;
		for (int i = 0; i < x->n; i++) {
			uint64_t f;
			if (jint(x->v[i], &f))
				return -1;
			*v |= f;
		}
		return 0;
	}
	if (x->t == J_BOOL) {
		*v = x->b;
		return 0;
	}
	return fail(0, "not an integer");
}

/* "buf", "buf+0x1000", "buf-16", or a number: a user address from the mmap table. */
static int jaddr(const struct j *x, uint64_t *v)
{
	if (x && x->t == J_STR && !const_lookup(x->s, v))
		return 0;
	if (x && x->t == J_STR && !isdigit((unsigned char)x->s[0]) && x->s[0] != '-') {
		char nm[128];
		const char *op = strpbrk(x->s, "+-");
		size_t n = op ? (size_t)(op - x->s) : strlen(x->s);
		if (n >= sizeof(nm))
			return fail(0, "buffer name too long");
		memcpy(nm, x->s, n);
		nm[n] = 0;
		while (n && nm[n - 1] == ' ')
			nm[--n] = 0;
		struct bufent *b = buf_lookup(nm);
		if (!b)
			return fail(0, "unknown buffer %s", nm);
		uint64_t off = 0;
		if (op) {
			const char *q = op + 1;
			while (*q == ' ')
				q++;
			char *end;
			off = strtoull(q, &end, 0);
			if (*end)
				return fail(0, "bad buffer offset in %s", x->s);
		}
		*v = (uint64_t)(uintptr_t)b->addr + (op && *op == '-' ? -off : off);
		return 0;
	}
	return jint(x, v);
}

static int jfd(const struct j *x, uint64_t *v)
{
	if (x && x->t == J_STR && !isdigit((unsigned char)x->s[0]) && x->s[0] != '-') {
		int fd = fd_lookup(x->s);
		if (fd < 0 && was_refused(x->s))
			return fail(1, "fd %s was not opened: its open was refused", x->s);
		if (fd < 0)
			return fail(0, "unknown fd name %s", x->s);
		*v = (uint64_t)(int64_t)fd;
		return 0;
	}
	return jint(x, v);
}

/* ------------------------------------------------------------------ names & allowlist */
static int is_group_key(const char *k)
{
	size_t n = strlen(k);
	if (k[0] == 'g' && n > 1 && strspn(k + 1, "0123456789") == n - 1)
		return 1;
	return n > 6 && !strcmp(k + n - 6, ".group");
}

static int name_has_value(const char *val, int (*keyok)(const char *))
{
	for (int i = 0; i < nnames; i++)
		if (!strcmp(names[i].val, val) && (!keyok || keyok(names[i].key)))
			return 1;
	return 0;
}

static int is_cdev_key(const char *k)
{
	size_t n = strlen(k);
	return n > 5 && !strcmp(k + n - 5, ".cdev");
}

/* Substitute {name} placeholders from the configuration. */
static int subst(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (const char *p = in; *p;) {
		if (*p == '{') {
			const char *e = strchr(p, '}');
			if (!e)
				return fail(0, "unterminated placeholder in %s", in);
			char key[128];
			if ((size_t)(e - p - 1) >= sizeof(key))
				return fail(0, "placeholder too long");
			memcpy(key, p + 1, e - p - 1);
			key[e - p - 1] = 0;
			const char *v = name_get(key);
			if (!v)
				return fail(1, "{%s} is not in the agent's configuration", key);
			size_t n = strlen(v);
			if (o + n >= cap)
				return fail(0, "path too long");
			memcpy(out + o, v, n);
			o += n;
			p = e + 1;
		} else {
			if (o + 1 >= cap)
				return fail(0, "path too long");
			out[o++] = *p++;
		}
	}
	out[o] = 0;
	return 0;
}

static int is_pci_addr(const char *s)
{
	/* dddd:bb:dd.f */
	return strlen(s) >= 12 && isxdigit((unsigned char)s[0]) && isxdigit((unsigned char)s[3]) &&
	       s[4] == ':' && isxdigit((unsigned char)s[5]) && isxdigit((unsigned char)s[6]) && s[7] == ':' &&
	       isxdigit((unsigned char)s[8]) && isxdigit((unsigned char)s[9]) && s[10] == '.' &&
	       isdigit((unsigned char)s[11]);
}

static int is_uuid(const char *s)
{
	static const int dash[] = {8, 13, 18, 23};
	for (int i = 0; i < 36; i++) {
		int d = i == dash[0] || i == dash[1] || i == dash[2] || i == dash[3];
		if (!s[i] || (d ? s[i] != '-' : !isxdigit((unsigned char)s[i])))
			return 0;
	}
	return 1;
}

/* Every PCI address or UUID in `s` must be one the configuration names. */
static int check_device_names(const char *s, const char *what)
{
	if (name_get("allow_all_names") && !strcmp(name_get("allow_all_names"), "1"))
		return 0;
	for (const char *p = s; *p; p++) {
		if ((p == s || !isxdigit((unsigned char)p[-1])) && is_pci_addr(p)) {
			char a[13];
			memcpy(a, p, 12);
			a[12] = 0;
			if (!name_has_value(a, NULL))
				return fail(1, "%s names PCI device %s, not in the agent's configuration", what, a);
			p += 11;
		} else if ((p == s || !isxdigit((unsigned char)p[-1])) && is_uuid(p)) {
			char u[37];
			memcpy(u, p, 36);
			u[36] = 0;
			if (!name_has_value(u, NULL))
				return fail(1, "%s names mdev %s, not in the agent's configuration", what, u);
			p += 35;
		}
	}
	return 0;
}

static int list_has(const char *list, const char *item, size_t n)
{
	if (!list)
		return 0;
	for (const char *p = list; *p;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == n && !strncmp(p, item, n))
			return 1;
		if (!e)
			break;
		p = e + 1;
	}
	return 0;
}

/* The allowlist: device nodes the configuration names, sysfs paths of its devices. */
static int path_allowed(const char *path, int is_sysfs_op)
{
	const char *extra = name_get("allow");
	if (extra) {
		for (const char *p = extra; *p;) {
			const char *e = strchr(p, ',');
			size_t l = e ? (size_t)(e - p) : strlen(p);
			if (l && !strncmp(path, p, l))
				return check_device_names(path, path); /* the prefix is trusted */
			if (!e)
				break;
			p = e + 1;
		}
	}
	if (strstr(path, "/../") || strstr(path, "/./"))
		return fail(1, "path %s is not canonical", path);
	if (!is_sysfs_op) {
		if (!strcmp(path, "/dev/vfio/vfio") || !strcmp(path, "/dev/iommu"))
			return 0;
		if (!strncmp(path, "/dev/vfio/devices/", 18)) {
			if (name_has_value(path + 18, is_cdev_key))
				return 0;
			return fail(1, "device node %s is not in the agent's configuration", path);
		}
		if (!strncmp(path, "/dev/vfio/", 10)) {
			if (strchr(path + 10, '/') == NULL && name_has_value(path + 10, is_group_key))
				return 0;
			return fail(1, "group %s is not in the agent's configuration", path);
		}
		return fail(1, "open of %s: only /dev/vfio and /dev/iommu nodes are allowed", path);
	}
	if (strncmp(path, "/sys/", 5))
		return fail(1, "read/write of %s: only sysfs paths are allowed", path);
	const char *parents = name_get("mdev_parents");
	if (!strncmp(path, "/sys/class/mdev_bus/", 20)) {
		const char *p = path + 20;
		size_t n = strcspn(p, "/");
		if (!list_has(parents, p, n))
			return fail(1, "mdev parent %.*s is not in the agent's configuration", (int)n, p);
	}
	if (!strncmp(path, "/sys/devices/virtual/mtty/", 26) && !list_has(parents, "mtty", 4))
		return fail(1, "mdev parent mtty is not in the agent's configuration");
	if (check_device_names(path, path))
		return -1;
	if (is_sysfs_op == 2) {
		/* writes: only where the configuration's devices and mdev parents live */
		int named = 0;
		for (const char *p = path; *p && !named; p++)
			named = is_pci_addr(p) || is_uuid(p);
		if (!named && strncmp(path, "/sys/class/mdev_bus/", 20) &&
		    strncmp(path, "/sys/devices/virtual/mtty/", 26) && strncmp(path, "/sys/bus/pci/drivers/", 21) &&
		    strcmp(path, "/sys/bus/pci/drivers_probe") && strcmp(path, "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode") &&
		    strncmp(path, "/sys/module/vfio_iommu_type1/parameters/", 40))
			return fail(1, "write to %s: not a path of a configured device or mdev parent", path);
	}
	return 0;
}

/* ------------------------------------------------------------------ struct packing */
static void put_scalar(unsigned char *p, unsigned size, uint64_t v)
{
	uint8_t a = v;
	uint16_t b = v;
	uint32_t c = v;
	switch (size) {
	case 1: memcpy(p, &a, 1); break;
	case 2: memcpy(p, &b, 2); break;
	case 4: memcpy(p, &c, 4); break;
	default: memcpy(p, &v, 8);
	}
}

static uint64_t get_scalar(const unsigned char *p, unsigned size)
{
	uint8_t a;
	uint16_t b;
	uint32_t c;
	uint64_t v;
	switch (size) {
	case 1: memcpy(&a, p, 1); return a;
	case 2: memcpy(&b, p, 2); return b;
	case 4: memcpy(&c, p, 4); return c;
	default: memcpy(&v, p, 8); return v;
	}
}

static const struct lfield *lfield_find(const struct lstruct *st, const char *name)
{
	for (unsigned i = 0; i < st->nfields; i++)
		if (!strcmp(st->fields[i].name, name))
			return &st->fields[i];
	return NULL;
}

/* Inline arrays allocated for one call, read back into `out` after it. */
struct inl { const struct lfield *f; unsigned base; void *mem; unsigned cap; };
struct addr_echo { const struct lfield *f; unsigned base; uint64_t v; const char *text; };
struct packctx { struct inl inl[8]; int ninl; struct addr_echo echo[8]; int necho; };

static int pack_struct(const struct lstruct *st, const struct j *obj, unsigned char *mem, unsigned base,
		       struct packctx *ctx)
{
	if (obj->t != J_OBJ)
		return fail(0, "%s: expected an object", st->name);
	/* an array field left out while its count is set: the agent supplies the room, as a
	 * program would, and reports what the kernel wrote there */
	for (unsigned i = 0; i < st->nfields; i++) {
		const struct lfield *f = &st->fields[i];
		uint64_t cnt = 0;
		const struct j *aj = jget(obj, f->name);
		/* absent, or 0 (the harness writes absent fields as zero) */
		if (f->kind != FK_ARRAY || !f->count || !jget(obj, f->count) ||
		    (aj && !(aj->t == J_NUM && !strcmp(aj->s, "0"))))
			continue;
		if (jint(jget(obj, f->count), &cnt))
			return -1;
		if (cnt == 0 || cnt > 4096 || ctx->ninl >= 8)
			continue;
		void *arr = xmalloc(lstructs[f->sub].size * cnt);
		ctx->inl[ctx->ninl++] = (struct inl){f, base, arr, (unsigned)cnt};
		put_scalar(mem + base + f->offset, f->size, (uint64_t)(uintptr_t)arr);
	}
	for (int i = 0; i < obj->n; i++) {
		const struct lfield *f = lfield_find(st, obj->k[i]);
		const struct j *x = obj->v[i];
		uint64_t v;
		if (!f)
			return fail(0, "%s has no field %s", st->name, obj->k[i]);
		unsigned char *at = mem + base + f->offset;
		switch (f->kind) {
		case FK_STRUCT:
			if (pack_struct(&lstructs[f->sub], x, mem, base + f->offset, ctx))
				return -1;
			continue;
		case FK_ADDR:
			if (jaddr(x, &v))
				return -1;
			if (x->t == J_STR && ctx->necho < 8)
				ctx->echo[ctx->necho++] = (struct addr_echo){f, base, v, x->s};
			break;
		case FK_FD:
			if (jfd(x, &v))
				return -1;
			break;
		case FK_ARRAY:
			if (x->t == J_ARR) {
				const struct lstruct *el = &lstructs[f->sub];
				uint64_t want = x->n;
				const struct lfield *cf = f->count ? lfield_find(st, f->count) : NULL;
				const struct j *cj = f->count ? jget(obj, f->count) : NULL;
				uint64_t given = 0;
				if (cj && jint(cj, &given))
					return -1;
				if (given > want && given < 4096)
					want = given;
				unsigned char *arr = xmalloc(el->size * (want ? want : 1));
				for (int e = 0; e < x->n; e++)
					if (pack_struct(el, x->v[e], arr, e * el->size, ctx))
						return -1;
				if (cf && !cj)
					put_scalar(mem + base + cf->offset, cf->size, x->n);
				if (ctx->ninl < 8)
					ctx->inl[ctx->ninl++] = (struct inl){f, base, arr, (unsigned)want};
				v = (uint64_t)(uintptr_t)arr;
			} else if (x->t == J_NUM && !strcmp(x->s, "0") && ctx->ninl && ctx->inl[ctx->ninl - 1].f == f) {
				continue; /* room supplied above */
			} else if (jaddr(x, &v)) {
				return -1;
			}
			break;
		default:
			if (jint(x, &v))
				return -1;
		}
		put_scalar(at, f->size, v);
	}
	return 0;
}

static void unpack_struct(struct sb *b, const struct lstruct *st, const unsigned char *mem, unsigned base,
			  const struct packctx *ctx)
{
	sb_puts(b, "{");
	for (unsigned i = 0; i < st->nfields; i++) {
		const struct lfield *f = &st->fields[i];
		if (i)
			sb_puts(b, ", ");
		sb_jstr(b, f->name);
		sb_puts(b, ": ");
		if (f->kind == FK_STRUCT) {
			unpack_struct(b, &lstructs[f->sub], mem, base + f->offset, ctx);
			continue;
		}
		uint64_t v = get_scalar(mem + base + f->offset, f->size);
		int done = 0;
		for (int k = 0; ctx && k < ctx->ninl && !done; k++) {
			const struct inl *in = &ctx->inl[k];
			if (in->f != f || in->base != base || v != (uint64_t)(uintptr_t)in->mem)
				continue;
			const struct lstruct *el = &lstructs[f->sub];
			uint64_t n = in->cap;
			const struct lfield *cf = f->count ? lfield_find(st, f->count) : NULL;
			if (cf) {
				uint64_t c = get_scalar(mem + base + cf->offset, cf->size);
				if (c < n)
					n = c;
			}
			sb_puts(b, "[");
			for (uint64_t e = 0; e < n; e++) {
				if (e)
					sb_puts(b, ", ");
				unpack_struct(b, el, in->mem, e * el->size, NULL);
			}
			sb_puts(b, "]");
			done = 1;
		}
		for (int k = 0; ctx && k < ctx->necho && !done; k++) {
			const struct addr_echo *a = &ctx->echo[k];
			if (a->f == f && a->base == base && a->v == v) {
				sb_jstr(b, a->text);
				done = 1;
			}
		}
		if (done)
			continue;
		if (f->is_signed)
			sb_printf(b, "%lld", (long long)(int32_t)v);
		else
			sb_printf(b, "%llu", (unsigned long long)v);
	}
	sb_puts(b, "}");
}

/* type1 VFIO_IOMMU_GET_INFO capability chain (include/uapi/linux/vfio.h). */
static void unpack_caps(struct sb *b, const unsigned char *mem, unsigned len, unsigned off, int type1)
{
	sb_puts(b, ", \"caps\": [");
	int first = 1, guard = 0;
	while (off && off + 8 <= len && guard++ < 32) {
		unsigned id = get_scalar(mem + off, 2), ver = get_scalar(mem + off + 2, 2);
		unsigned next = get_scalar(mem + off + 4, 4);
		if (!first)
			sb_puts(b, ", ");
		first = 0;
		static const char *const cap_names[] = {NULL, "VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE",
							"VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION",
							"VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL"};
		if (type1 && id >= 1 && id <= 3)
			sb_printf(b, "{\"id\": \"%s\", \"version\": %u, \"next\": %u", cap_names[id], ver, next);
		else
			sb_printf(b, "{\"id\": %u, \"version\": %u, \"next\": %u", id, ver, next);
		if (!type1) {
			/* other INFO ioctls' capabilities: the header only */
		} else if (id == 1 && off + 16 <= len) { /* VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE */
			unsigned nr = get_scalar(mem + off + 8, 4);
			sb_printf(b, ", \"nr_iovas\": %u, \"iova_ranges\": [", nr);
			for (unsigned i = 0; i < nr && off + 16 + 16 * (i + 1) <= len; i++)
				sb_printf(b, "%s{\"start\": %llu, \"end\": %llu}", i ? ", " : "",
					  (unsigned long long)get_scalar(mem + off + 16 + 16 * i, 8),
					  (unsigned long long)get_scalar(mem + off + 24 + 16 * i, 8));
			sb_puts(b, "]");
		} else if (id == 2 && off + 32 <= len) { /* _CAP_MIGRATION */
			sb_printf(b, ", \"flags\": %llu, \"pgsize_bitmap\": %llu, \"max_dirty_bitmap_size\": %llu",
				  (unsigned long long)get_scalar(mem + off + 8, 4),
				  (unsigned long long)get_scalar(mem + off + 16, 8),
				  (unsigned long long)get_scalar(mem + off + 24, 8));
		} else if (id == 3 && off + 12 <= len) { /* _INFO_DMA_AVAIL */
			sb_printf(b, ", \"avail\": %llu", (unsigned long long)get_scalar(mem + off + 8, 4));
		}
		sb_puts(b, "}");
		if (next <= off)
			break;
		off = next;
	}
	sb_puts(b, "]");
}

/* ------------------------------------------------------------------ steps */
static void answer_result(struct sb *o, long long ret, int err, const char *out, const char *data)
{
	sb_printf(o, "{\"ret\": %lld, \"errno\": ", ret);
	if (err)
		sb_jstr(o, errno_name(err));
	else
		sb_puts(o, "null");
	sb_puts(o, ", \"out\": ");
	sb_puts(o, out ? out : "{}");
	if (data) {
		sb_puts(o, ", \"data\": ");
		sb_jstr(o, data);
	}
	sb_puts(o, "}");
}

static const struct lioctl *ioctl_find(const char *name)
{
	for (int i = 0; i < N_LIOCTLS; i++)
		if (!strcmp(lioctls[i].name, name))
			return &lioctls[i];
	return NULL;
}

static int do_ioctl(const struct j *st, struct sb *o)
{
	uint64_t fdv;
	const struct j *cmdj = jget(st, "cmd"), *arg = jget(st, "arg");
	if (jfd(jget(st, "fd"), &fdv))
		return -1;
	if (!cmdj || cmdj->t != J_STR)
		return fail(1, "ioctl cmd must be a name");
	const struct lioctl *io = ioctl_find(cmdj->s);
	if (!io)
		return fail(1, "unknown ioctl %s", cmdj->s);
	int fd = (int)fdv;
	long ret;
	int err = 0;
	struct sb out = {0};
	switch (io->arg) {
	case AK_NONE:
		ret = ioctl(fd, _IO((io->nr >> 8) & 0xff, io->nr & 0xff), 0UL);
		break;
	case AK_INT: {
		uint64_t v = 0;
		if (arg && jint(arg, &v))
			return -1;
		ret = ioctl(fd, _IO((io->nr >> 8) & 0xff, io->nr & 0xff), (unsigned long)v);
		break;
	}
	case AK_FD: {
		uint64_t v;
		if (jfd(arg, &v))
			return -1;
		int32_t f = (int32_t)v;
		ret = ioctl(fd, _IO((io->nr >> 8) & 0xff, io->nr & 0xff), &f);
		break;
	}
	case AK_STRING: {
		char s[4096];
		if (!arg || arg->t != J_STR)
			return fail(0, "%s takes a string", io->name);
		if (subst(arg->s, s, sizeof(s)) || check_device_names(s, io->name))
			return -1;
		ret = ioctl(fd, _IO((io->nr >> 8) & 0xff, io->nr & 0xff), s);
		break;
	}
	default: {
		const struct lstruct *ls = &lstructs[io->st];
		const struct lfield *szf = lfield_find(ls, io->size_field);
		uint64_t given = ls->size;
		const struct j *gj = arg ? jget(arg, io->size_field) : NULL;
		if (gj && jint(gj, &given))
			return -1;
		size_t len = ls->size;
		if (given > len)
			len = given > (1u << 20) ? ls->size + 4096 : given;
		/* room for capability chains the kernel writes within argsz */
		unsigned char *mem = xmalloc(len);
		struct packctx ctx = {0};
		put_scalar(mem + szf->offset, szf->size, ls->size);
		if (arg && pack_struct(ls, arg, mem, 0, &ctx)) {
			free(mem);
			for (int i = 0; i < ctx.ninl; i++)
				free(ctx.inl[i].mem);
			return -1;
		}
		ret = ioctl(fd, _IO((io->nr >> 8) & 0xff, io->nr & 0xff), mem);
		err = ret < 0 ? errno : 0;
		unpack_struct(&out, ls, mem, 0, &ctx);
		const struct lfield *cof = lfield_find(ls, "cap_offset");
		if (cof && ret >= 0) {
			/* the capability chain within argsz, as "caps" (empty when there is none) */
			uint64_t coff = get_scalar(mem + cof->offset, cof->size);
			int type1 = !strcmp(io->name, "VFIO_IOMMU_GET_INFO");
			out.s[--out.n] = 0; /* drop the closing brace */
			if (coff && coff < len)
				unpack_caps(&out, mem, len, coff, type1);
			else
				sb_puts(&out, ", \"caps\": []");
			sb_puts(&out, "}");
		}
		free(mem);
		for (int i = 0; i < ctx.ninl; i++)
			free(ctx.inl[i].mem);
		goto done;
	}
	}
	err = ret < 0 ? errno : 0;
done:
	if (ret >= 0) {
		const char *as = jgets(st, "as");
		if (as)
			fd_bind(as, (int)ret);
		else if (io->arg == AK_STRING)
			fd_bind(NULL, (int)ret); /* closed at end */
	}
	answer_result(o, ret < 0 ? -1 : ret, err, out.s, NULL);
	free(out.s);
	return 0;
}

static int do_open(const struct j *st, struct sb *o)
{
	char path[4096];
	const char *p = jgets(st, "path");
	uint64_t flags = O_RDWR;
	if (!p)
		return fail(0, "open needs a path");
	if (jget(st, "flags") && jint(jget(st, "flags"), &flags))
		return -1;
	if (subst(p, path, sizeof(path)) || path_allowed(path, 0))
		return -1;
	int fd = open(path, (int)flags | O_CLOEXEC);
	int err = fd < 0 ? errno : 0;
	if (fd >= 0)
		fd_bind(jgets(st, "as"), fd);
	answer_result(o, fd, err, NULL, NULL);
	return 0;
}

static int do_close(const struct j *st, struct sb *o)
{
	uint64_t v;
	if (jfd(jget(st, "fd"), &v))
		return -1;
	int r = close((int)v);
	int err = r < 0 ? errno : 0;
	if (r == 0)
		fd_forget((int)v);
	answer_result(o, r, err, NULL, NULL);
	return 0;
}

static int do_mmap(const struct j *st, struct sb *o)
{
	uint64_t len;
	const char *as = jgets(st, "as");
	if (jint(jget(st, "length"), &len))
		return -1;
	if (!as)
		return fail(0, "mmap needs `as`");
	const struct j *h = jget(st, "hugepage");
	int huge = h && ((h->t == J_BOOL && h->b) || (h->t == J_NUM && strcmp(h->s, "0")));
	size_t align = huge ? (2u << 20) : 0;
	/* a hugepage buffer: 2 MiB aligned, THP asked for (hugetlbfs is not assumed) */
	void *a = mmap(NULL, len + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED) {
		answer_result(o, -1, errno, NULL, NULL);
		return 0;
	}
	if (huge) {
		uintptr_t p = ((uintptr_t)a + align - 1) & ~(uintptr_t)(align - 1);
		if (p > (uintptr_t)a)
			munmap(a, p - (uintptr_t)a);
		if ((uintptr_t)a + align > p)
			munmap((void *)(p + len), (uintptr_t)a + align - p);
		a = (void *)p;
#ifdef MADV_HUGEPAGE
		madvise(a, len, MADV_HUGEPAGE);
#endif
	}
	if (nbufs == 256) {
		munmap(a, len);
		return fail(0, "too many buffers");
	}
	bufs[nbufs++] = (struct bufent){xstrdup(as), a, len, len};
	answer_result(o, 0, 0, NULL, NULL);
	return 0;
}

static int do_munmap(const struct j *st, struct sb *o)
{
	const char *nm = jgets(st, "addr");
	struct bufent *b = nm ? buf_lookup(nm) : NULL;
	if (!b)
		return fail(0, "munmap of an unknown buffer");
	int r = munmap(b->addr, b->olen);
	int err = r < 0 ? errno : 0;
	/* the name keeps its address: later steps may pass the unmapped range on purpose */
	if (r == 0)
		b->len = 0;
	answer_result(o, r, err, NULL, NULL);
	return 0;
}

static void strip_nl(char *s)
{
	size_t n = strlen(s);
	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = 0;
}

static int do_read(const struct j *st, struct sb *o)
{
	char path[4096], data[8192];
	const char *p = jgets(st, "path");
	if (!p)
		return fail(0, "read needs a path");
	if (subst(p, path, sizeof(path)) || path_allowed(path, 1))
		return -1;
	/* the trace format's reading of a sysfs link (its target's name: mdev_type, iommu_group)
	 * and of a directory (its entries, sorted, one a line: a type's devices/) */
	struct stat lst;
	if (!lstat(path, &lst) && (S_ISLNK(lst.st_mode) || S_ISDIR(lst.st_mode))) {
		if (S_ISLNK(lst.st_mode)) {
			char link[4096];
			ssize_t n = readlink(path, link, sizeof(link) - 1);
			if (n < 0) {
				answer_result(o, -1, errno, NULL, NULL);
				return 0;
			}
			link[n] = 0;
			snprintf(data, sizeof(data), "%s", strrchr(link, '/') ? strrchr(link, '/') + 1 : link);
		} else {
			struct dirent **ents;
			int n = scandir(path, &ents, NULL, alphasort);
			if (n < 0) {
				answer_result(o, -1, errno, NULL, NULL);
				return 0;
			}
			size_t used = 0;
			data[0] = 0;
			for (int i = 0; i < n; i++) {
				const char *nm = ents[i]->d_name;
				if (strcmp(nm, ".") && strcmp(nm, "..") && used + strlen(nm) + 2 < sizeof(data))
					used += snprintf(data + used, sizeof(data) - used, "%s%s", used ? "\n" : "", nm);
				free(ents[i]);
			}
			free(ents);
		}
		char *end;
		long long v = strtoll(data, &end, 10);
		answer_result(o, (*data && !*end) ? v : 0, 0, NULL, data);
		return 0;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		answer_result(o, -1, errno, NULL, NULL);
		return 0;
	}
	ssize_t n = read(fd, data, sizeof(data) - 1);
	int err = n < 0 ? errno : 0;
	close(fd);
	if (n < 0) {
		answer_result(o, -1, err, NULL, NULL);
		return 0;
	}
	data[n] = 0;
	strip_nl(data);
	char *end;
	long long v = strtoll(data, &end, 10);
	if (!*data || *end)
		v = 0;
	answer_result(o, v, 0, NULL, data);
	return 0;
}

static char *created_mdevs[64];
static int ncreated;

static void mdev_names(const char *as, const char *uuid)
{
	char p[512], link[512];
	name_set(as, uuid, 1);
	snprintf(p, sizeof(p), "/sys/bus/mdev/devices/%s/iommu_group", uuid);
	ssize_t n = readlink(p, link, sizeof(link) - 1);
	if (n > 0) {
		link[n] = 0;
		char k[160];
		snprintf(k, sizeof(k), "%s.group", as);
		name_set(k, strrchr(link, '/') ? strrchr(link, '/') + 1 : link, 1);
	}
	for (int i = 0; i < 64; i++) {
		struct stat sb;
		snprintf(p, sizeof(p), "/sys/bus/mdev/devices/%s/vfio-dev/vfio%d", uuid, i);
		if (!stat(p, &sb)) {
			char k[160], v[32];
			snprintf(k, sizeof(k), "%s.cdev", as);
			snprintf(v, sizeof(v), "vfio%d", i);
			name_set(k, v, 1);
			break;
		}
	}
}

static int do_write(const struct j *st, struct sb *o)
{
	char path[4096], data[4096];
	const char *p = jgets(st, "path"), *d = jgets(st, "data"), *as = jgets(st, "as");
	const struct j *dj = jget(st, "data");
	if (!p)
		return fail(0, "write needs a path");
	if (subst(p, path, sizeof(path)) || path_allowed(path, 2))
		return -1;
	size_t pl = strlen(path);
	int is_create = pl > 7 && !strcmp(path + pl - 7, "/create");
	if (dj && dj->t == J_NUM)
		d = dj->s;
	if (is_create && as && (!d || !*d || (d[0] == '{' && !name_get(as)))) {
		/* a new mdev named by `as`: the agent picks its UUID */
		int fd = open("/proc/sys/kernel/random/uuid", O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, data, 36) : -1;
		if (fd >= 0)
			close(fd);
		if (n != 36)
			return fail(0, "cannot make a UUID");
		data[36] = 0;
	} else {
		if (subst(d ? d : "", data, sizeof(data)))
			return -1;
		if (!is_create && check_device_names(data, "data"))
			return -1;
	}
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		answer_result(o, -1, errno, NULL, NULL);
		return 0;
	}
	ssize_t n = write(fd, data, strlen(data));
	int err = n < 0 ? errno : 0;
	close(fd);
	if (n > 0 && is_create && is_uuid(data)) {
		/* the kernel parses the first 36 characters as the UUID */
		char u[37];
		memcpy(u, data, 36);
		u[36] = 0;
		for (int i = 0; u[i]; i++)
			u[i] = tolower((unsigned char)u[i]);
		if (ncreated < 64)
			created_mdevs[ncreated++] = xstrdup(u);
		char k[64];
		snprintf(k, sizeof(k), "mdev-%s", u);
		name_set(k, u, 1);
		if (as)
			mdev_names(as, u);
	}
	answer_result(o, n < 0 ? -1 : n, err, NULL, NULL);
	return 0;
}

/* ------------------------------------------------------------------ process limits
 * A trace's platform.process: rlimit_memlock and caps (of the three the reference
 * models) are the trace's for its duration.  Capabilities leave only the effective
 * set (capable() checks it; the permitted set keeps them for the next trace), and
 * RLIMIT_MEMLOCK is restored with CAP_SYS_RESOURCE back in effect. */
static const struct { const char *name; int bit; } process_caps[] = {
	{"CAP_IPC_LOCK", 14}, {"CAP_SYS_RAWIO", 17}, {"CAP_SYS_RESOURCE", 24},
};
#define N_PROCESS_CAPS (sizeof(process_caps) / sizeof(process_caps[0]))
struct cap_header { uint32_t version; int pid; };
struct cap_data { uint32_t effective, permitted, inheritable; };
static struct rlimit saved_memlock;
static int memlock_changed, caps_changed;

static int caps_get(struct cap_data d[2])
{
	struct cap_header h = {0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0};
	return syscall(SYS_capget, &h, d);
}

static int caps_set(struct cap_data d[2])
{
	struct cap_header h = {0x20080522, 0};
	return syscall(SYS_capset, &h, d);
}

static void process_limits_restore(void)
{
	struct cap_data d[2];
	if (caps_changed && !caps_get(d)) {
		d[0].effective = d[0].permitted;
		d[1].effective = d[1].permitted;
		if (caps_set(d))
			fprintf(stderr, "agent: restoring capabilities: %s\n", strerror(errno));
	}
	caps_changed = 0;
	if (memlock_changed && setrlimit(RLIMIT_MEMLOCK, &saved_memlock))
		fprintf(stderr, "agent: restoring RLIMIT_MEMLOCK: %s\n", strerror(errno));
	memlock_changed = 0;
}

static int process_limits_apply(const struct j *platform)
{
	const struct j *proc = jget(platform, "process");
	const struct j *lim = jget(proc, "rlimit_memlock");
	const struct j *caps = jget(proc, "caps");
	if (lim) {
		uint64_t v;
		if (jint(lim, &v))
			return fail(0, "platform.process.rlimit_memlock: %s", errmsg);
		if (getrlimit(RLIMIT_MEMLOCK, &saved_memlock))
			return fail(1, "getrlimit(RLIMIT_MEMLOCK): %s", strerror(errno));
		struct rlimit r = {v, v};
		if (setrlimit(RLIMIT_MEMLOCK, &r))
			return fail(1, "setrlimit(RLIMIT_MEMLOCK, %llu): %s", (unsigned long long)v, strerror(errno));
		memlock_changed = 1;
	}
	if (caps) {
		uint32_t keep = 0;
		if (caps->t != J_ARR)
			return fail(0, "platform.process.caps: expected a list of capability names");
		for (int i = 0; i < caps->n; i++) {
			size_t c = 0;
			const char *name = caps->v[i]->t == J_STR ? caps->v[i]->s : "";
			while (c < N_PROCESS_CAPS && strcmp(process_caps[c].name, name))
				c++;
			if (c == N_PROCESS_CAPS)
				return fail(1, "platform.process.caps: the agent sets only CAP_IPC_LOCK, "
					    "CAP_SYS_RAWIO and CAP_SYS_RESOURCE, not %s", name);
			keep |= 1u << process_caps[c].bit;
		}
		struct cap_data d[2];
		if (caps_get(d))
			return fail(1, "capget: %s", strerror(errno));
		for (size_t c = 0; c < N_PROCESS_CAPS; c++) {
			uint32_t bit = 1u << process_caps[c].bit;
			if (keep & bit) {
				if (!(d[0].permitted & bit))
					return fail(1, "the agent does not have %s to give the trace", process_caps[c].name);
				d[0].effective |= bit;
			} else {
				d[0].effective &= ~bit;
			}
		}
		if (caps_set(d))
			return fail(1, "capset: %s", strerror(errno));
		caps_changed = 1;
	}
	return 0;
}

static void trace_cleanup(void)
{
	process_limits_restore();
	for (int i = nfds - 1; i >= 0; i--) {
		close(fds[i].fd);
		free(fds[i].name);
	}
	nfds = 0;
	for (int i = nbufs - 1; i >= 0; i--) {
		if (bufs[i].len)
			munmap(bufs[i].addr, bufs[i].len);
		free(bufs[i].name);
	}
	nbufs = 0;
	for (int i = 0; i < nrefused; i++)
		free(refused[i]);
	nrefused = 0;
	/* mdevs this trace created (by a successful write to a `create` file) are removed */
	for (int i = 0; i < ncreated; i++) {
		char p[512];
		snprintf(p, sizeof(p), "/sys/bus/mdev/devices/%s/remove", created_mdevs[i]);
		int fd = open(p, O_WRONLY | O_CLOEXEC);
		if (fd >= 0) {
			if (write(fd, "1", 1) < 0)
				fprintf(stderr, "agent: removing mdev %s: %s\n", created_mdevs[i], strerror(errno));
			close(fd);
		}
		free(created_mdevs[i]);
	}
	ncreated = 0;
	for (int i = 0; i < nnames; i++)
		if (names[i].created) {
			free(names[i].key);
			free(names[i].val);
			names[i--] = names[--nnames];
		}
}

static void hello(struct sb *o)
{
	struct utsname u;
	uname(&u);
	sb_puts(o, "{\"type\": \"hello\", \"protocol\": 1, \"target\": ");
	if (target_name) {
		sb_jstr(o, target_name);
	} else {
		char t[400];
		snprintf(t, sizeof(t), "linux %s %s (" AGENT_VERSION ")", u.release, u.machine);
		sb_jstr(o, t);
	}
	sb_puts(o, ", \"platform\": ");
	if (platform)
		jdump(o, platform);
	else
		sb_puts(o, "null");
	sb_puts(o, ", \"calls\": [\"open\", \"close\", \"ioctl\", \"mmap\", \"munmap\", \"read\", \"write\"], "
		   "\"ioctls\": [");
	for (int i = 0; i < N_LIOCTLS; i++) {
		if (i)
			sb_puts(o, ", ");
		sb_jstr(o, lioctls[i].name);
	}
	sb_puts(o, "]}");
}

static void handle(const char *line, struct sb *o)
{
	const char *perr = NULL;
	struct j *req = jparse(line, &perr);
	errmsg[0] = 0;
	if (!req || req->t != J_OBJ) {
		sb_puts(o, "{\"error\": ");
		sb_jstr(o, perr ? perr : "request is not an object");
		sb_puts(o, "}");
		jfree(req);
		return;
	}
	const char *type = jgets(req, "type");
	int r = 0;
	if (!type) {
		r = fail(0, "request without type");
	} else if (!strcmp(type, "hello")) {
		hello(o);
	} else if (!strcmp(type, "begin")) {
		trace_cleanup();
		r = process_limits_apply(jget(req, "platform"));
		if (r)
			process_limits_restore();
		else
			sb_puts(o, "{\"ok\": true}");
	} else if (!strcmp(type, "end")) {
		trace_cleanup();
		sb_puts(o, "{\"ok\": true}");
	} else if (!strcmp(type, "step")) {
		const struct j *st = jget(req, "step");
		const char *call = jgets(st, "call");
		if (!call)
			r = fail(0, "step without call");
		else if (!strcmp(call, "open"))
			r = do_open(st, o);
		else if (!strcmp(call, "close"))
			r = do_close(st, o);
		else if (!strcmp(call, "ioctl"))
			r = do_ioctl(st, o);
		else if (!strcmp(call, "mmap"))
			r = do_mmap(st, o);
		else if (!strcmp(call, "munmap"))
			r = do_munmap(st, o);
		else if (!strcmp(call, "read"))
			r = do_read(st, o);
		else if (!strcmp(call, "write"))
			r = do_write(st, o);
		else if (!strcmp(call, "kapi"))
			r = fail(1, "kapi: in-kernel driver API calls cannot be made from user space");
		else
			r = fail(1, "unknown call %s", call);
		const char *as = jgets(st, "as");
		if (r && err_is_unsupported && as && nrefused < 64)
			refused[nrefused++] = xstrdup(as);
	} else {
		r = fail(0, "unknown request type %s", type);
	}
	if (r) {
		o->n = 0;
		if (o->s)
			o->s[0] = 0;
		sb_puts(o, err_is_unsupported ? "{\"unsupported\": " : "{\"error\": ");
		sb_jstr(o, errmsg);
		sb_puts(o, "}");
	}
	jfree(req);
}

/* ------------------------------------------------------------------ config */
static int load_config(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "agent: cannot read config %s: %s\n", path, strerror(errno));
		return -1;
	}
	struct sb b = {0};
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		sb_add(&b, chunk, n);
	fclose(f);
	if (!b.s)
		return 0;
	const char *s = b.s;
	while (isspace((unsigned char)*s))
		s++;
	if (*s == '{') {
		const char *err;
		struct j *c = jparse(s, &err);
		if (!c) {
			fprintf(stderr, "agent: config %s: %s\n", path, err);
			free(b.s);
			return -1;
		}
		const struct j *nm = jget(c, "names");
		for (int i = 0; nm && nm->t == J_OBJ && i < nm->n; i++) {
			if (nm->v[i]->t == J_STR || nm->v[i]->t == J_NUM)
				name_set(nm->k[i], nm->v[i]->s, 0);
		}
		const char *t = jgets(c, "target");
		if (t)
			target_name = xstrdup(t);
		for (int i = 0; i < c->n; i++)
			if (!strcmp(c->k[i], "platform")) {
				jfree(platform);
				platform = c->v[i];
				c->v[i] = xmalloc(sizeof(struct j)); /* J_NULL left behind */
			}
		jfree(c);
	} else {
		char *save, *line;
		for (line = strtok_r(b.s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			while (isspace((unsigned char)*line))
				line++;
			strip_nl(line);
			if (!*line || *line == '#')
				continue;
			char *eq = strchr(line, '=');
			if (!eq)
				continue;
			*eq = 0;
			char *k = line, *v = eq + 1;
			size_t kl = strlen(k);
			while (kl && isspace((unsigned char)k[kl - 1]))
				k[--kl] = 0;
			while (isspace((unsigned char)*v))
				v++;
			size_t vl = strlen(v);
			while (vl && isspace((unsigned char)v[vl - 1]))
				v[--vl] = 0;
			if (!strcmp(k, "target"))
				target_name = xstrdup(v);
			else
				name_set(k, v, 0);
		}
	}
	free(b.s);
	return 0;
}

/* ------------------------------------------------------------------ main */
static int write_all(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -1;
		}
		s += w;
		n -= w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *device = NULL;
	int ready = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--config") && i + 1 < argc) {
			if (load_config(argv[++i]))
				return 2;
		} else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
			device = argv[++i];
		} else if (!strcmp(argv[i], "--ready")) {
			ready = 1;
		} else if (!strcmp(argv[i], "--version")) {
			puts(AGENT_VERSION);
			return 0;
		} else {
			fprintf(stderr, "usage: %s [--config FILE]... [--device PATH] [--ready]\n", argv[0]);
			return 2;
		}
	}
	int in = 0, out = 1;
	if (device) {
		in = out = open(device, O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (in < 0) {
			fprintf(stderr, "agent: open %s: %s\n", device, strerror(errno));
			return 2;
		}
	}
	if (isatty(in)) {
		struct termios t;
		if (!tcgetattr(in, &t)) {
			cfmakeraw(&t);
			tcsetattr(in, TCSANOW, &t);
		}
	}
	if (ready) {
		struct utsname u;
		struct sb r = {0};
		uname(&u);
		sb_puts(&r, "\n{\"type\": \"ready\", \"release\": ");
		sb_jstr(&r, u.release);
		sb_puts(&r, ", \"machine\": ");
		sb_jstr(&r, u.machine);
		sb_puts(&r, "}\n");
		write_all(out, r.s, r.n);
		free(r.s);
	}
	struct sb line = {0};
	char chunk[65536];
	for (;;) {
		ssize_t n = read(in, chunk, sizeof(chunk));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			char c = chunk[i];
			if (c == '\r' || c == 0)
				continue;
			if (c != '\n') {
				sb_add(&line, &c, 1);
				continue;
			}
			if (line.n) {
				struct sb o = {0};
				handle(line.s, &o);
				sb_add(&o, "\n", 1);
				if (write_all(out, o.s, o.n))
					return 1;
				free(o.s);
			}
			line.n = 0;
			if (line.s)
				line.s[0] = 0;
		}
	}
	trace_cleanup();
	return 0;
}
