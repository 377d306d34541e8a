/*
 * rxd_drd_cq.c - eight threads sharing one FI_THREAD_SAFE domain, with plain
 * libfabric, for valgrind's DRD: the pattern of tests/tests/threads.rs.
 *
 * One fabric and one domain (hints: FI_EP_RDM, FI_MSG|FI_TAGGED,
 * FI_THREAD_SAFE, mr_mode LOCAL|VIRT_ADDR|ALLOCATED|PROV_KEY|ENDPOINT, mode
 * FI_CONTEXT|FI_CONTEXT2; node 127.0.0.1 with FI_SOURCE, except for shm).
 * Two endpoints A and B, each with its own CQ (FI_CQ_FORMAT_TAGGED, 1024
 * entries, no wait object) and its own FI_AV_UNSPEC AV holding the other's
 * name. 8 pthreads each post, for seq in 0..N, an fi_trecv on B (tag
 * thread<<32|seq, ignore 0, a malloc'd 2048-byte buffer) and an fi_tsend on
 * A to B with the same tag (1 + (tag*29) % 2048 bytes of a payload derived
 * from the tag); on -FI_EAGAIN they read both CQs and retry, and they keep at
 * most 64 operations in flight per endpoint. Every thread reads completions
 * from both CQs, whoever posted them (fi_cq_read; fi_cq_readerr on
 * -FI_EAVAIL), checks each received payload and frees the buffers, until all
 * 8*N sends and 8*N receives are counted. Every operation has its own heap
 * context (a struct fi_context2 first). The program's own shared state (the
 * counters) is under one pthread mutex, which DRD follows, so any conflict
 * DRD reports is between accesses made inside libfabric.
 *
 * Build: cc -O1 -g -pthread tests/repro/rxd_drd_cq.c $(pkg-config --cflags --libs libfabric) -o /tmp/rxd_drd_cq
 * Run:   FI_UDP_IFACE=lo /tmp/rxd_drd_cq [N [PROVIDER]]  (defaults: 50, 'udp;ofi_rxd')
 *        FI_UDP_IFACE=lo valgrind --tool=drd --fair-sched=yes /tmp/rxd_drd_cq 50
 *        valgrind --tool=drd --fair-sched=yes /tmp/rxd_drd_cq 50 shm          (control)
 *        FI_SOCKETS_IFACE=lo valgrind --tool=drd --fair-sched=yes /tmp/rxd_drd_cq 10 sockets
 * Exit status: 0 after "ok: <sends> sends, <receives> receives", 1 on any
 * error (the call and fi_strerror are printed) or a wrong payload, or when
 * nothing completes for 170 s.
 *
 * Observed on this machine (Debian 12, libfabric 1.17.0-3, whose library is
 * libfabric.so.1.20.0, stripped; valgrind 3.19). Natively, every provider
 * prints "ok" (udp;ofi_rxd also with N = 2000, three runs):
 *
 * $ FI_UDP_IFACE=lo /tmp/rxd_drd_cq 50
 * --- udp;ofi_rxd: 8 threads x 50 messages, mode (none), threading FI_THREAD_SAFE
 * ok: 400 sends, 400 receives
 *
 * $ FI_UDP_IFACE=lo valgrind --tool=drd --fair-sched=yes /tmp/rxd_drd_cq 50
 * (prints "ok: 400 sends, 400 receives", exit status 0, in about 2 s)
 * ERROR SUMMARY: 268 errors from 6 contexts (suppressed: 12 from 8)
 *   (192 and 159 in two more runs; 1216 from 6 contexts with N = 200; even
 *   N = 1 reports some)
 * The 6 contexts are three sites, all on one 8-byte word: offset 16 of a
 * block calloc'd (calloc(1, 0xc020): a 32-byte header and 1024 48-byte
 * fi_cq_tagged_entry slots, i.e. the CQ's circular queue) inside fi_cq_open,
 * one block per CQ. Offset 16 is the queue's read count:
 *   - store in fi_cq_read, libfabric.so+0x40177 (addq $1,0x10(cirq): the
 *     read count advanced after an entry is taken), on both CQs, with the
 *     CQ's lock held;
 *   - load in fi_trecv (on B, B's CQ), libfabric.so+0xcb581, and
 *   - load in fi_tsend (on A, A's CQ), libfabric.so+0xcbd22: both compute
 *     rcnt + size == wcnt (is the CQ full?) right after locking the
 *     endpoint's mutex, not the CQ's.
 * So rxd's post path checks for room in the bound CQ under the endpoint
 * lock while fi_cq_read moves the same counter under the CQ lock.
 *
 * $ valgrind --tool=drd --fair-sched=yes /tmp/rxd_drd_cq 50 shm      (control)
 * ok: 400 sends, 400 receives
 * ERROR SUMMARY: 0 errors from 0 contexts (suppressed: 6 from 4)
 *   (the same with N = 200, and for 'tcp;ofi_rxm' with N = 200: 0 errors)
 *
 * $ FI_SOCKETS_IFACE=lo valgrind --tool=drd --fair-sched=yes /tmp/rxd_drd_cq 10 sockets
 * ok: 80 sends, 80 receives
 * ERROR SUMMARY: 14 errors from 9 contexts (suppressed: 8 from 6)
 *   sockets has its own progress threads; DRD reports fi_tsend against them
 *   and against other fi_tsend calls (on objects allocated in fi_endpoint),
 *   provider threads against each other, and fi_close of the domain against
 *   the still-running provider threads (on objects allocated in fi_domain).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>

#define THREADS 8
#define WINDOW 8 /* per thread; the bound is WINDOW * THREADS per endpoint */
#define BUF_LEN 2048
#define STALL_SECONDS 170

/* One posted operation; libfabric hands its address back as op_context. */
struct op {
	struct fi_context2 ctx; /* first: the provider may use it (FI_CONTEXT2) */
	int is_send;
	uint64_t tag;
	size_t len;
	unsigned char *buf;
};

struct side {
	struct fid_cq *cq;
	struct fid_av *av;
	struct fid_ep *ep;
	fi_addr_t peer;
};

static struct side a, b;
static uint64_t n_per_thread = 50;

/* The program's own shared state, all under one mutex. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t sent, received, in_flight_a, in_flight_b;
static double last_progress;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void fail(const char *call, ssize_t ret)
{
	fprintf(stderr, "%s: %s (%zd)\n", call, fi_strerror((int)-ret), ret);
	exit(1);
}

#define CHECK(call)                              \
	do {                                     \
		ssize_t ret_ = (call);           \
		if (ret_)                        \
			fail(#call, ret_);       \
	} while (0)

static size_t length(uint64_t tag)
{
	return 1 + (size_t)((tag * 29) % BUF_LEN);
}

static unsigned char payload_byte(uint64_t tag, size_t i)
{
	return (unsigned char)((tag * 131 + i * 7) % 251);
}

static uint64_t locked_read(uint64_t *v)
{
	pthread_mutex_lock(&lock);
	uint64_t x = *v;
	pthread_mutex_unlock(&lock);
	return x;
}

/* Accounts one completion read from either queue. */
static void take(const struct fi_cq_tagged_entry *e, int from_a)
{
	struct op *op = e->op_context;
	if (op->is_send != from_a || !(e->flags & (op->is_send ? FI_SEND : FI_RECV))) {
		fprintf(stderr, "completion of tag %#" PRIx64 " on the wrong queue (flags %#" PRIx64 ")\n", op->tag,
			(uint64_t)e->flags);
		exit(1);
	}
	if (!op->is_send) {
		if (e->tag != op->tag || e->len != op->len) {
			fprintf(stderr, "receive %#" PRIx64 ": got tag %#" PRIx64 ", len %zu (want %zu)\n", op->tag,
				(uint64_t)e->tag, e->len, op->len);
			exit(1);
		}
		for (size_t i = 0; i < op->len; i++)
			if (op->buf[i] != payload_byte(op->tag, i)) {
				fprintf(stderr, "receive %#" PRIx64 ": wrong byte at %zu\n", op->tag, i);
				exit(1);
			}
	}
	pthread_mutex_lock(&lock);
	if (op->is_send) {
		sent++;
		in_flight_a--;
	} else {
		received++;
		in_flight_b--;
	}
	last_progress = now();
	pthread_mutex_unlock(&lock);
	free(op->buf);
	free(op);
}

/* Reads what one queue holds (up to 8 entries); exits on an error entry. */
static void poll_cq(struct side *s, int from_a)
{
	struct fi_cq_tagged_entry e[8];
	ssize_t ret = fi_cq_read(s->cq, e, 8);
	if (ret == -FI_EAGAIN)
		return;
	if (ret == -FI_EAVAIL) {
		struct fi_cq_err_entry err = {0};
		ssize_t r = fi_cq_readerr(s->cq, &err, 0);
		if (r == -FI_EAGAIN)
			return; /* another thread took it */
		if (r < 0)
			fail("fi_cq_readerr", r);
		struct op *op = err.op_context;
		fprintf(stderr, "fi_cq_read (%s): error entry for tag %#" PRIx64 ": %s (err %d, prov_errno %d)\n",
			from_a ? "A" : "B", op ? op->tag : 0, fi_strerror(err.err), err.err, err.prov_errno);
		exit(1);
	}
	if (ret < 0)
		fail("fi_cq_read", ret);
	for (ssize_t i = 0; i < ret; i++)
		take(&e[i], from_a);
}

static void progress(int thread)
{
	poll_cq(&a, 1);
	poll_cq(&b, 0);
	pthread_mutex_lock(&lock);
	double last = last_progress;
	pthread_mutex_unlock(&lock);
	if (now() - last > STALL_SECONDS) {
		fprintf(stderr, "thread %d: no completion for %d s (sent %" PRIu64 ", received %" PRIu64 ")\n", thread,
			STALL_SECONDS, locked_read(&sent), locked_read(&received));
		exit(1);
	}
}

static void *worker(void *arg)
{
	int thread = (int)(intptr_t)arg;
	for (uint64_t seq = 0; seq < n_per_thread; seq++) {
		uint64_t tag = ((uint64_t)thread << 32) | seq;

		struct op *rx = calloc(1, sizeof(*rx));
		rx->tag = tag;
		rx->len = length(tag);
		rx->buf = calloc(1, BUF_LEN);
		pthread_mutex_lock(&lock);
		in_flight_b++;
		pthread_mutex_unlock(&lock);
		ssize_t ret;
		while ((ret = fi_trecv(b.ep, rx->buf, BUF_LEN, NULL, FI_ADDR_UNSPEC, tag, 0, &rx->ctx)) == -FI_EAGAIN)
			progress(thread);
		if (ret)
			fail("fi_trecv", ret);

		struct op *tx = calloc(1, sizeof(*tx));
		tx->is_send = 1;
		tx->tag = tag;
		tx->len = length(tag);
		tx->buf = malloc(tx->len);
		for (size_t i = 0; i < tx->len; i++)
			tx->buf[i] = payload_byte(tag, i);
		pthread_mutex_lock(&lock);
		in_flight_a++;
		pthread_mutex_unlock(&lock);
		while ((ret = fi_tsend(a.ep, tx->buf, tx->len, NULL, a.peer, tag, &tx->ctx)) == -FI_EAGAIN)
			progress(thread);
		if (ret)
			fail("fi_tsend", ret);

		while (locked_read(&in_flight_a) > WINDOW * THREADS || locked_read(&in_flight_b) > WINDOW * THREADS)
			progress(thread);
	}
	uint64_t total = n_per_thread * THREADS;
	while (locked_read(&sent) < total || locked_read(&received) < total)
		progress(thread);
	return NULL;
}

static void open_side(struct fid_domain *domain, struct fi_info *info, struct side *s)
{
	struct fi_cq_attr cq_attr = {.size = 1024, .format = FI_CQ_FORMAT_TAGGED, .wait_obj = FI_WAIT_NONE};
	CHECK(fi_cq_open(domain, &cq_attr, &s->cq, NULL));
	struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};
	CHECK(fi_av_open(domain, &av_attr, &s->av, NULL));
	CHECK(fi_endpoint(domain, info, &s->ep, NULL));
	CHECK(fi_ep_bind(s->ep, &s->cq->fid, FI_TRANSMIT | FI_RECV));
	CHECK(fi_ep_bind(s->ep, &s->av->fid, 0));
	CHECK(fi_enable(s->ep));
}

static void insert_peer(struct side *s, struct side *peer)
{
	char name[256];
	size_t len = sizeof(name);
	CHECK(fi_getname(&peer->ep->fid, name, &len));
	int ret = fi_av_insert(s->av, name, 1, &s->peer, 0, NULL);
	if (ret != 1)
		fail("fi_av_insert", ret < 0 ? ret : -FI_EOTHER);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		n_per_thread = strtoull(argv[1], NULL, 10);
	const char *prov = argc > 2 ? argv[2] : "udp;ofi_rxd";
	if (n_per_thread < 1 || n_per_thread > (1ULL << 32)) {
		fprintf(stderr, "usage: %s [N [PROVIDER]]\n", argv[0]);
		return 1;
	}

	struct fi_info *hints = fi_allocinfo(), *infos, *info;
	hints->ep_attr->type = FI_EP_RDM;
	hints->caps = FI_MSG | FI_TAGGED;
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->domain_attr->threading = FI_THREAD_SAFE;
	hints->domain_attr->mr_mode =
		FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
	hints->fabric_attr->prov_name = strdup(prov);
	const char *node = strcmp(prov, "shm") ? "127.0.0.1" : NULL;
	CHECK(fi_getinfo(FI_VERSION(1, 17), node, NULL, node ? FI_SOURCE : 0, hints, &infos));
	fi_freeinfo(hints);
	for (info = infos; info && strcmp(info->fabric_attr->prov_name, prov); info = info->next)
		;
	if (!info) {
		fprintf(stderr, "fi_getinfo: no %s info\n", prov);
		return 1;
	}
	if (info->domain_attr->mr_mode & FI_MR_LOCAL)
		/* Would need a registration per buffer; not asked for by these providers. */
		fprintf(stderr, "note: %s asks for FI_MR_LOCAL; buffers are not registered\n", prov);
	printf("--- %s: %d threads x %" PRIu64 " messages, mode%s%s%s, threading %s\n", prov, THREADS, n_per_thread,
	       info->mode & FI_CONTEXT ? " FI_CONTEXT" : "", info->mode & FI_CONTEXT2 ? " FI_CONTEXT2" : "",
	       info->mode & (FI_CONTEXT | FI_CONTEXT2) ? "" : " (none)",
	       info->domain_attr->threading == FI_THREAD_SAFE ? "FI_THREAD_SAFE" : "(other)");
	fflush(stdout);

	struct fid_fabric *fabric;
	struct fid_domain *domain;
	CHECK(fi_fabric(info->fabric_attr, &fabric, NULL));
	CHECK(fi_domain(fabric, info, &domain, NULL));
	open_side(domain, info, &a);
	open_side(domain, info, &b);
	insert_peer(&a, &b);
	insert_peer(&b, &a);

	last_progress = now();
	pthread_t threads[THREADS];
	for (int t = 0; t < THREADS; t++)
		if (pthread_create(&threads[t], NULL, worker, (void *)(intptr_t)t)) {
			fprintf(stderr, "pthread_create failed\n");
			return 1;
		}
	for (int t = 0; t < THREADS; t++)
		pthread_join(threads[t], NULL);

	printf("ok: %" PRIu64 " sends, %" PRIu64 " receives\n", sent, received);
	CHECK(fi_close(&a.ep->fid));
	CHECK(fi_close(&b.ep->fid));
	CHECK(fi_close(&a.av->fid));
	CHECK(fi_close(&b.av->fid));
	CHECK(fi_close(&a.cq->fid));
	CHECK(fi_close(&b.cq->fid));
	CHECK(fi_close(&domain->fid));
	CHECK(fi_close(&fabric->fid));
	fi_freeinfo(infos);
	return 0;
}
