/*
 * Time stamps on a ping-pong's critical path, for `cargo xtask turns` and
 * `cargo xtask bench`: an
 * LD_PRELOAD library that measures any libfabric program the same way, the
 * C fi_pingpong as much as this project's Rust tools.
 *
 * libfabric's data calls are inline functions that jump through the ops
 * tables of each object, so they cannot be interposed by name. fi_fabric
 * can: this library wraps it, and gives each fabric, domain, completion
 * queue and endpoint opened from it a copy of its ops table in which the
 * calls below are wrapped. It reads the time stamp counter
 *   - when a completion read (fi_cq_read) returns something, and
 *   - before and after each send: fi_inject, fi_injectdata, fi_send,
 *     fi_senddata and their tagged forms (fi_sendmsg, used by neither
 *     pingpong's loop, is left alone).
 * A *turn* runs from the read that returned a message to the call that
 * sends the answer: all that the program does between the two. A *send*
 * is the call itself, and a *wait* runs from a send's return to the next
 * read that returns something: on the client, for an inject, the server's
 * turn and inject and two trips through the provider (for a send with a
 * completion, the wait ends at that completion, and means little). At
 * exit it prints, to standard error, after dropping the first tenth as
 * warm-up:
 *
 *   turns: turns N p10 A p50 B p90 C mean D, sends ..., waits ... ns
 *
 * (the mean is of the samples between the 10th and 90th percentiles).
 *
 * Every part starts after the probe's own bookkeeping and ends at its
 * first counter read, so the probes (a few counter reads and atomic
 * operations, about 50 ns a side per round trip here) lengthen the round
 * trip without entering the parts; the same for every program measured.
 * x86_64 only.
 *
 *   cc -O2 -shared -fPIC scripts/turns.c -o turns.so
 *   LD_PRELOAD=./turns.so fi_pingpong ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_tagged.h>

#define MOST (1 << 22)

struct samples {
	atomic_size_t n;
	uint64_t v[MOST];
};

static struct samples turns, sends, waits;
/* When the last read returned something, the send being made was called,
 * and the last send returned; 0 once used. */
static _Atomic uint64_t last_read, sending, last_send;
static uint64_t tsc0;
static struct timespec clock0;

static void push(struct samples *s, uint64_t ticks)
{
	size_t i = atomic_fetch_add_explicit(&s->n, 1, memory_order_relaxed);
	if (i < MOST)
		s->v[i] = ticks;
}

/* A copy of an ops table (size bytes, then the original's address), to be
 * changed without touching the provider's. */
static void *copy_ops(void *ops, size_t size, size_t wrapped)
{
	char *copy = calloc(1, wrapped);
	if (copy) {
		memcpy(copy, ops, size);
		memcpy(copy + wrapped - sizeof(ops), &ops, sizeof(ops));
	}
	return copy;
}
#define COPY(kind, table) ((struct wrapped_##kind *)copy_ops((table), sizeof(struct fi_ops_##kind), sizeof(struct wrapped_##kind)))

/* Each wrapped table, with the provider's own that it copies: a wrapper
 * finds the original through the object it is called on, so layered
 * providers (rxm over tcp) keep each object's own calls. */
#define WRAPPED(kind)                                                          \
	struct wrapped_##kind {                                                \
		struct fi_ops_##kind ops;                                      \
		struct fi_ops_##kind *orig;                                    \
	}
WRAPPED(fabric);
WRAPPED(domain);
WRAPPED(cq);
WRAPPED(msg);
WRAPPED(tagged);
#define ORIG(kind, table) (((struct wrapped_##kind *)(table))->orig)

static ssize_t cq_read(struct fid_cq *cq, void *buf, size_t count)
{
	ssize_t ret = ORIG(cq, cq->ops)->read(cq, buf, count);
	if (ret > 0) {
		uint64_t t = __rdtsc();
		uint64_t sent = atomic_exchange_explicit(&last_send, 0, memory_order_relaxed);
		if (sent)
			push(&waits, t - sent);
		/* Read again: the turn starts after this bookkeeping. */
		atomic_store_explicit(&last_read, __rdtsc(), memory_order_relaxed);
	}
	return ret;
}

static void before_send(void)
{
	uint64_t t = __rdtsc();
	uint64_t read = atomic_exchange_explicit(&last_read, 0, memory_order_relaxed);
	if (read)
		push(&turns, t - read);
	atomic_store_explicit(&sending, __rdtsc(), memory_order_relaxed);
}

static void after_send(void)
{
	uint64_t t = __rdtsc();
	push(&sends, t - atomic_load_explicit(&sending, memory_order_relaxed));
	atomic_store_explicit(&last_send, __rdtsc(), memory_order_relaxed);
}

/* A wrapper that times a call through the original table, by name. */
#define TIMED(kind, call, ...)                                                 \
	before_send();                                                         \
	ssize_t ret = ORIG(kind, ep->kind)->call(ep, __VA_ARGS__);             \
	after_send();                                                          \
	return ret

static ssize_t msg_inject(struct fid_ep *ep, const void *buf, size_t len, fi_addr_t dest)
{
	TIMED(msg, inject, buf, len, dest);
}

static ssize_t msg_injectdata(struct fid_ep *ep, const void *buf, size_t len, uint64_t data, fi_addr_t dest)
{
	TIMED(msg, injectdata, buf, len, data, dest);
}

static ssize_t msg_send(struct fid_ep *ep, const void *buf, size_t len, void *desc, fi_addr_t dest, void *context)
{
	TIMED(msg, send, buf, len, desc, dest, context);
}

static ssize_t msg_senddata(struct fid_ep *ep, const void *buf, size_t len, void *desc, uint64_t data,
			    fi_addr_t dest, void *context)
{
	TIMED(msg, senddata, buf, len, desc, data, dest, context);
}

static ssize_t tagged_inject(struct fid_ep *ep, const void *buf, size_t len, fi_addr_t dest, uint64_t tag)
{
	TIMED(tagged, inject, buf, len, dest, tag);
}

static ssize_t tagged_injectdata(struct fid_ep *ep, const void *buf, size_t len, uint64_t data, fi_addr_t dest,
				 uint64_t tag)
{
	TIMED(tagged, injectdata, buf, len, data, dest, tag);
}

static ssize_t tagged_send(struct fid_ep *ep, const void *buf, size_t len, void *desc, fi_addr_t dest, uint64_t tag,
			   void *context)
{
	TIMED(tagged, send, buf, len, desc, dest, tag, context);
}

static ssize_t tagged_senddata(struct fid_ep *ep, const void *buf, size_t len, void *desc, uint64_t data,
			       fi_addr_t dest, uint64_t tag, void *context)
{
	TIMED(tagged, senddata, buf, len, desc, data, dest, tag, context);
}

static int cq_open(struct fid_domain *domain, struct fi_cq_attr *attr, struct fid_cq **cq, void *context)
{
	int ret = ORIG(domain, domain->ops)->cq_open(domain, attr, cq, context);
	struct wrapped_cq *w;
	if (ret == 0 && (w = COPY(cq, (*cq)->ops))) {
		w->ops.read = cq_read;
		(*cq)->ops = &w->ops;
	}
	return ret;
}

static int endpoint(struct fid_domain *domain, struct fi_info *info, struct fid_ep **ep, void *context)
{
	int ret = ORIG(domain, domain->ops)->endpoint(domain, info, ep, context);
	if (ret != 0)
		return ret;
	struct wrapped_msg *m;
	if ((*ep)->msg && (m = COPY(msg, (*ep)->msg))) {
		m->ops.inject = msg_inject;
		m->ops.injectdata = msg_injectdata;
		m->ops.send = msg_send;
		m->ops.senddata = msg_senddata;
		(*ep)->msg = &m->ops;
	}
	struct wrapped_tagged *t;
	if ((*ep)->tagged && (t = COPY(tagged, (*ep)->tagged))) {
		t->ops.inject = tagged_inject;
		t->ops.injectdata = tagged_injectdata;
		t->ops.send = tagged_send;
		t->ops.senddata = tagged_senddata;
		(*ep)->tagged = &t->ops;
	}
	return ret;
}

static void wrap_domain(struct fid_domain *domain)
{
	struct wrapped_domain *w = COPY(domain, domain->ops);
	if (w) {
		w->ops.cq_open = cq_open;
		w->ops.endpoint = endpoint;
		domain->ops = &w->ops;
	}
}

static int fabric_domain(struct fid_fabric *fabric, struct fi_info *info, struct fid_domain **domain, void *context)
{
	int ret = ORIG(fabric, fabric->ops)->domain(fabric, info, domain, context);
	if (ret == 0)
		wrap_domain(*domain);
	return ret;
}

static int fabric_domain2(struct fid_fabric *fabric, struct fi_info *info, struct fid_domain **domain,
			  uint64_t flags, void *context)
{
	int ret = ORIG(fabric, fabric->ops)->domain2(fabric, info, domain, flags, context);
	if (ret == 0)
		wrap_domain(*domain);
	return ret;
}

int fi_fabric(struct fi_fabric_attr *attr, struct fid_fabric **fabric, void *context)
{
	static int (*real)(struct fi_fabric_attr *, struct fid_fabric **, void *);
	if (!real)
		real = (int (*)(struct fi_fabric_attr *, struct fid_fabric **, void *))dlsym(RTLD_NEXT, "fi_fabric");
	if (!real)
		return -FI_ENOSYS;
	/* A layered provider opens its core provider's fabric inside this
	 * call: only the program's own objects are measured. */
	static __thread int depth;
	depth++;
	int ret = real(attr, fabric, context);
	depth--;
	struct wrapped_fabric *w;
	if (ret == 0 && depth == 0 && (w = COPY(fabric, (*fabric)->ops))) {
		w->ops.domain = fabric_domain;
		if (w->orig->size >= sizeof(w->ops) && w->orig->domain2)
			w->ops.domain2 = fabric_domain2;
		(*fabric)->ops = &w->ops;
		tsc0 = __rdtsc();
		clock_gettime(CLOCK_MONOTONIC, &clock0);
	}
	return ret;
}

static int by_value(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* "N p10 a p50 b p90 c" of the samples after the first tenth, in ns. */
static void summary(const char *name, struct samples *s, double per_ns, const char *end)
{
	size_t n = atomic_load(&s->n);
	if (n > MOST)
		n = MOST;
	size_t skip = n / 10, kept = n - skip;
	fprintf(stderr, "%s %zu", name, kept);
	if (kept) {
		uint64_t *v = s->v + skip;
		qsort(v, kept, sizeof(*v), by_value);
		for (int q = 10; q <= 90; q += 40)
			fprintf(stderr, " p%d %.0f", q, v[(kept - 1) * q / 100] / per_ns);
		/* The mean between the 10th and 90th percentiles: finer than
		 * a percentile, as the counter ticks in steps of about 10 ns
		 * on some virtual machines, and free of the rare long ones. */
		double sum = 0;
		size_t lo = kept / 10, hi = kept - kept / 10;
		for (size_t i = lo; i < hi; i++)
			sum += v[i];
		fprintf(stderr, " mean %.1f", sum / (hi - lo) / per_ns);
	}
	fputs(end, stderr);
}

__attribute__((destructor)) static void report(void)
{
	if (!tsc0)
		return;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double ns = (now.tv_sec - clock0.tv_sec) * 1e9 + (now.tv_nsec - clock0.tv_nsec);
	double per_ns = (__rdtsc() - tsc0) / ns;
	fputs("turns: ", stderr);
	summary("turns", &turns, per_ns, ", ");
	summary("sends", &sends, per_ns, ", ");
	summary("waits", &waits, per_ns, " ns\n");
}
