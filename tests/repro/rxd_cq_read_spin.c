/*
 * rxd_cq_read_spin.c - requests and answers between two processes over
 * udp;ofi_rxd, the client reading its one queue from two threads while they
 * post, with plain libfabric: the pattern of
 * tests/tests/transport.rs::busy_polling_futures_read_the_queue_themselves_across_threads.
 *
 * Both processes: hints FI_EP_RDM, FI_MSG|FI_TAGGED, FI_THREAD_SAFE, mr_mode
 * LOCAL|VIRT_ADDR|ALLOCATED|PROV_KEY|ENDPOINT, node 127.0.0.1 with FI_SOURCE;
 * one endpoint, one CQ (FI_CQ_FORMAT_TAGGED, no wait object), one AV holding
 * the other's name (exchanged over a pipe before either sends).
 *
 * The server (a forked child) keeps 64 fi_trecv posted (any tag, 4096-byte
 * buffers) and answers each request with the same bytes, tag | ANSWER, by
 * fi_tinjectdata when they fit the inject size, else by fi_tsenddata (its
 * receive is posted again once that send completes).
 *
 * The client runs two threads, each with four requests in flight (eight in
 * all, as the test's eight tasks on two worker threads). A request's bytes
 * (0, 1, 63, 64, 1000 or 4096, by its sequence number, as in the test) go by fi_tinjectdata when
 * they fit, and then its answer's fi_trecv is posted (as the Rust transport
 * does: the answer may come first); a larger request's fi_tsenddata follows
 * its answer's fi_trecv. Between posts, each
 * thread reads the queue when no other thread is reading it (a trylock; the
 * Rust driver's gate) and marks whichever requests, of either thread, the
 * entries finish. Every answer is checked byte for byte.
 *
 * A watchdog (the main thread) prints what each client thread is inside of
 * when no completion has been read for 20 s, and the program exits 2.
 *
 * Build: cc -O2 -Wall -pthread tests/repro/rxd_cq_read_spin.c $(pkg-config --cflags --libs libfabric) -o /tmp/rxd_cq_read_spin
 * Run:   FI_UDP_IFACE=lo /tmp/rxd_cq_read_spin [REQUESTS [PROVIDER [THREADS]]]   (defaults: 100000, 'udp;ofi_rxd', 2)
 *        for i in $(seq 50); do FI_UDP_IFACE=lo /tmp/rxd_cq_read_spin 20000 || break; done
 * Exit status: 0 after "ok: ...", 1 on any error (the call and fi_strerror
 * are printed) or a wrong answer, 2 on a stall.
 *
 * Environment: SERIALISE=1 makes every libfabric call of the client threads
 * under one mutex; RECV_FIRST=1 posts every answer's receive before its
 * request leaves, injected or not.
 *
 * Observed on this machine (Debian 12, libfabric 1.17.0-3), runs of 20,000
 * requests, each stall printed with the requests then in flight; known
 * issue 10 in tests/libfabric-known-issues.md:
 *
 * $ FI_UDP_IFACE=lo /tmp/rxd_cq_read_spin 20000
 * --- udp;ofi_rxd: 20000 requests, 2 threads x 4 in flight, inject size 1256
 * stall: no completion for 20 s after 2765 answers
 *   thread 0: inside fi_cq_read for 20074 ms
 *     request 2769 (1 bytes, injected): send done, no answer; server: received and answered
 *     ...
 *   thread 1: inside nothing for 20075 ms
 *     ...
 * (a read that never returns; thread 1 spins on the trylock)
 *
 * $ SERIALISE=1 FI_UDP_IFACE=lo /tmp/rxd_cq_read_spin 20000
 * --- udp;ofi_rxd: 20000 requests, 2 threads x 4 in flight, inject size 1256, calls serialised
 * stall: no completion for 20 s after 19999 answers
 *   thread 0: inside done for 20068 ms
 *   thread 1: inside fi_cq_read for 0 ms
 *     request 18910 (4096 bytes, sent): send done, no answer; server: received and answered
 * (one answer lost; the reads return)
 *
 * Tallies (runs; stalls of each kind):
 *   plain:                      114 runs: 3 hung in a read, 5 lost an answer
 *   SERIALISE=1:                112 runs: 3 hung in a read, 7 lost an answer
 *   RECV_FIRST=1:               114 runs, no stall
 *   SERIALISE=1 RECV_FIRST=1:   111 runs, no stall
 *   one client thread (third argument 1: four requests in flight, not
 *   eight): 120 runs, no stall (and 150 of an earlier build whose
 *   requests were of 1 to 4,096 bytes)
 *   control, shm (second argument 'shm'; all its requests fit its 4,096-byte
 *   inject size, so every answer may come first): 20 runs, no stall
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>

#define THREADS 8 /* at most */
#define SLOTS 4 /* requests in flight per client thread */
#define SERVER_RECEIVES 64
#define MAX_LEN 4096
#define ANSWER (1ULL << 60)
#define STALL_SECONDS 20

struct side {
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_cq *cq;
	struct fid_av *av;
	struct fid_ep *ep;
	fi_addr_t peer;
	size_t inject_size;
};

static void fail(const char *call, ssize_t ret)
{
	fprintf(stderr, "[%d] %s: %s (%zd)\n", (int)getpid(), call, fi_strerror((int)-ret), ret);
	exit(1);
}

#define CHECK(call)                              \
	do {                                     \
		ssize_t ret_ = (call);           \
		if (ret_)                        \
			fail(#call, ret_);       \
	} while (0)

/* The Rust test's sizes: within and past the inject size, and empty. */
static size_t length(uint64_t seq)
{
	static const size_t sizes[] = {0, 1, 63, 64, 1000, 4096, 4096, 4096};
	return sizes[seq % 8];
}

static unsigned char payload_byte(uint64_t seq, size_t i)
{
	return (unsigned char)((seq * 131 + i * 7) % 251);
}

static void open_side(struct side *s, const char *prov)
{
	struct fi_info *hints = fi_allocinfo(), *infos, *info;
	hints->ep_attr->type = FI_EP_RDM;
	hints->caps = FI_MSG | FI_TAGGED;
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
		exit(1);
	}
	s->info = fi_dupinfo(info);
	fi_freeinfo(infos);
	s->inject_size = s->info->tx_attr->inject_size;

	CHECK(fi_fabric(s->info->fabric_attr, &s->fabric, NULL));
	CHECK(fi_domain(s->fabric, s->info, &s->domain, NULL));
	struct fi_cq_attr cq_attr = {.size = 1024, .format = FI_CQ_FORMAT_TAGGED, .wait_obj = FI_WAIT_NONE};
	CHECK(fi_cq_open(s->domain, &cq_attr, &s->cq, NULL));
	struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};
	CHECK(fi_av_open(s->domain, &av_attr, &s->av, NULL));
	CHECK(fi_endpoint(s->domain, s->info, &s->ep, NULL));
	CHECK(fi_ep_bind(s->ep, &s->cq->fid, FI_TRANSMIT | FI_RECV));
	CHECK(fi_ep_bind(s->ep, &s->av->fid, 0));
	CHECK(fi_enable(s->ep));
}

static void send_name(struct side *s, int fd)
{
	char name[256];
	size_t len = sizeof(name);
	CHECK(fi_getname(&s->ep->fid, name, &len));
	if (write(fd, &len, sizeof(len)) != sizeof(len) || write(fd, name, len) != (ssize_t)len) {
		perror("write");
		exit(1);
	}
}

static void insert_name(struct side *s, int fd)
{
	char name[256];
	size_t len;
	if (read(fd, &len, sizeof(len)) != sizeof(len) || len > sizeof(name) || read(fd, name, len) != (ssize_t)len) {
		perror("read");
		exit(1);
	}
	int ret = fi_av_insert(s->av, name, 1, &s->peer, 0, NULL);
	if (ret != 1)
		fail("fi_av_insert", ret < 0 ? ret : -FI_EOTHER);
}

/* ---- the server ---- */

/* What the server did with each request, by sequence number, in memory
 * shared with the client (mapped before the fork): 1 received, 2 answered. */
static _Atomic unsigned char *server_did;

struct server_op {
	struct fi_context ctx; /* first */
	int sending;
	unsigned char buf[MAX_LEN];
};

static void server_post(struct side *s, struct server_op *op)
{
	ssize_t ret;
	op->sending = 0;
	while ((ret = fi_trecv(s->ep, op->buf, MAX_LEN, NULL, FI_ADDR_UNSPEC, 0, ~0ULL, &op->ctx)) == -FI_EAGAIN) {
		struct fi_cq_tagged_entry e;
		(void)fi_cq_read(s->cq, &e, 0);
	}
	if (ret)
		fail("server fi_trecv", ret);
}

static void server_answer(struct side *s, struct server_op *op, const struct fi_cq_tagged_entry *e)
{
	uint64_t tag = e->tag | ANSWER;
	ssize_t ret;
	atomic_store(&server_did[e->tag], 1);
	if (e->len <= s->inject_size) {
		while ((ret = fi_tinjectdata(s->ep, op->buf, e->len, 0, s->peer, tag)) == -FI_EAGAIN)
			(void)fi_cq_read(s->cq, NULL, 0);
		if (ret)
			fail("server fi_tinjectdata", ret);
		atomic_store(&server_did[e->tag], 2);
		server_post(s, op);
		return;
	}
	op->sending = 1;
	while ((ret = fi_tsenddata(s->ep, op->buf, e->len, NULL, 0, s->peer, tag, &op->ctx)) == -FI_EAGAIN)
		(void)fi_cq_read(s->cq, NULL, 0);
	if (ret)
		fail("server fi_tsenddata", ret);
	atomic_store(&server_did[e->tag], 2);
}

static void serve(struct side *s)
{
	static struct server_op ops[SERVER_RECEIVES];
	for (int i = 0; i < SERVER_RECEIVES; i++)
		server_post(s, &ops[i]);
	for (;;) {
		struct fi_cq_tagged_entry e[8];
		ssize_t n = fi_cq_read(s->cq, e, 8);
		if (n == -FI_EAGAIN)
			continue;
		if (n < 0) {
			struct fi_cq_err_entry err = {0};
			if (n == -FI_EAVAIL && fi_cq_readerr(s->cq, &err, 0) == 1)
				fprintf(stderr, "server: error entry: %s\n", fi_strerror(err.err));
			fail("server fi_cq_read", n);
		}
		for (ssize_t i = 0; i < n; i++) {
			struct server_op *op = e[i].op_context;
			if (op->sending)
				server_post(s, op);
			else
				server_answer(s, op, &e[i]);
		}
	}
}

/* ---- the client ---- */

enum where { NOWHERE, IN_CQ_READ, IN_TRECV, IN_TINJECTDATA, IN_TSENDDATA, DONE };
static const char *where_name[] = {"nothing", "fi_cq_read", "fi_trecv", "fi_tinjectdata", "fi_tsenddata", "done"};

struct request {
	struct fi_context recv_ctx; /* first: a receive completion's op_context */
	struct fi_context send_ctx;
	uint64_t seq;
	size_t len;
	atomic_int answered, sent; /* set by whichever thread reads the entry */
	int busy;
	unsigned char out[MAX_LEN], in[MAX_LEN];
};

static struct side client;
static struct request *slots[THREADS];
static pthread_mutex_t reader = PTHREAD_MUTEX_INITIALIZER;
static atomic_uint_fast64_t next_seq, completions, answers;
static uint64_t total = 100000;
static int threads = 2;
static atomic_int where[THREADS];
static atomic_llong since[THREADS];

static long long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void enter(int thread, enum where w)
{
	atomic_store(&since[thread], now_ms());
	atomic_store(&where[thread], w);
}

/* With SERIALISE set in the environment, every libfabric call of the client
 * threads is made under one mutex (the workaround under test). */
static int serialise;
/* With RECV_FIRST set, every request's answer receive is posted before the
 * request leaves, injected or not. */
static int recv_first;
static pthread_mutex_t calls = PTHREAD_MUTEX_INITIALIZER;

static void begin(int thread, enum where w)
{
	if (serialise)
		pthread_mutex_lock(&calls);
	enter(thread, w);
}

static void leave(int thread)
{
	enter(thread, NOWHERE);
	if (serialise)
		pthread_mutex_unlock(&calls);
}

/* Reads the queue unless another thread is reading it. */
static void progress(int thread)
{
	if (pthread_mutex_trylock(&reader))
		return;
	struct fi_cq_tagged_entry e[8];
	begin(thread, IN_CQ_READ);
	ssize_t n = fi_cq_read(client.cq, e, 8);
	leave(thread);
	if (n == -FI_EAVAIL) {
		struct fi_cq_err_entry err = {0};
		if (fi_cq_readerr(client.cq, &err, 0) == 1)
			fprintf(stderr, "client: error entry: %s (prov_errno %d)\n", fi_strerror(err.err), err.prov_errno);
		fail("client fi_cq_read", n);
	}
	if (n < 0 && n != -FI_EAGAIN)
		fail("client fi_cq_read", n);
	for (ssize_t i = 0; i < n; i++) {
		struct fi_context *ctx = e[i].op_context;
		if (e[i].flags & FI_RECV) {
			struct request *r = (struct request *)ctx;
			if (e[i].len != r->len || e[i].tag != (r->seq | ANSWER)) {
				fprintf(stderr, "answer %" PRIu64 ": len %zu tag %#" PRIx64 "\n", r->seq, e[i].len,
					(uint64_t)e[i].tag);
				exit(1);
			}
			atomic_store(&r->answered, 1);
		} else {
			struct request *r = (struct request *)((char *)ctx - offsetof(struct request, send_ctx));
			atomic_store(&r->sent, 1);
		}
		atomic_fetch_add(&completions, 1);
	}
	pthread_mutex_unlock(&reader);
}

/* The request's bytes, by inject or send, retried while the queue is full. */
static void post_request(int thread, struct request *r, int inject)
{
	ssize_t ret;
	for (;;) {
		if (inject) {
			begin(thread, IN_TINJECTDATA);
			ret = fi_tinjectdata(client.ep, r->out, r->len, r->seq, client.peer, r->seq);
		} else {
			begin(thread, IN_TSENDDATA);
			ret = fi_tsenddata(client.ep, r->out, r->len, NULL, r->seq, client.peer, r->seq, &r->send_ctx);
		}
		leave(thread);
		if (ret != -FI_EAGAIN)
			break;
		progress(thread);
	}
	if (ret)
		fail(inject ? "client fi_tinjectdata" : "client fi_tsenddata", ret);
}

/* The receive of the request's answer, retried while the queue is full. */
static void post_answer_receive(int thread, struct request *r)
{
	ssize_t ret;
	for (;;) {
		begin(thread, IN_TRECV);
		ret = fi_trecv(client.ep, r->in, MAX_LEN, NULL, client.peer, r->seq | ANSWER, 0, &r->recv_ctx);
		leave(thread);
		if (ret != -FI_EAGAIN)
			break;
		progress(thread);
	}
	if (ret)
		fail("client fi_trecv", ret);
}

static int start(int thread, struct request *r)
{
	uint64_t seq = atomic_fetch_add(&next_seq, 1);
	if (seq >= total)
		return 0;
	r->seq = seq;
	r->len = length(seq);
	for (size_t i = 0; i < r->len; i++)
		r->out[i] = payload_byte(seq, i);
	atomic_store(&r->answered, 0);
	atomic_store(&r->sent, 0);
	int inject = r->len <= client.inject_size;
	int inject_first = inject && !recv_first;
	/* As the Rust transport does: a small request is injected first and
	 * its answer's receive posted after it (the answer may come before
	 * the receive); a larger one is sent once the receive is posted. */
	if (inject_first)
		post_request(thread, r, inject);
	post_answer_receive(thread, r);
	if (!inject_first)
		post_request(thread, r, inject);
	if (inject)
		atomic_store(&r->sent, 1);
	r->busy = 1;
	return 1;
}

static void finish(struct request *r)
{
	for (size_t i = 0; i < r->len; i++)
		if (r->in[i] != r->out[i]) {
			fprintf(stderr, "answer %" PRIu64 ": wrong byte at %zu\n", r->seq, i);
			exit(1);
		}
	r->busy = 0;
	atomic_fetch_add(&answers, 1);
}

static void *client_thread(void *arg)
{
	int thread = (int)(intptr_t)arg;
	int more = 1, busy;
	do {
		busy = 0;
		for (int i = 0; i < SLOTS; i++) {
			struct request *r = &slots[thread][i];
			if (r->busy && atomic_load(&r->answered) && atomic_load(&r->sent))
				finish(r);
			if (!r->busy && more)
				more = start(thread, r);
			busy += r->busy;
		}
		progress(thread);
	} while (busy || more);
	enter(thread, DONE);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		total = strtoull(argv[1], NULL, 10);
	const char *prov = argc > 2 ? argv[2] : "udp;ofi_rxd";
	if (argc > 3)
		threads = atoi(argv[3]);
	serialise = getenv("SERIALISE") != NULL;
	recv_first = getenv("RECV_FIRST") != NULL;
	if (total < 1 || threads < 1 || threads > THREADS) {
		fprintf(stderr, "usage: %s [REQUESTS [PROVIDER [THREADS (1 to %d)]]]\n", argv[0], THREADS);
		return 1;
	}
	server_did = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (server_did == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	for (int t = 0; t < THREADS; t++)
		slots[t] = calloc(SLOTS, sizeof(struct request));
	int to_client[2], to_server[2];
	if (pipe(to_client) || pipe(to_server)) {
		perror("pipe");
		return 1;
	}
	pid_t server = fork();
	if (server == 0) {
		struct side s = {0};
		open_side(&s, prov);
		send_name(&s, to_client[1]);
		insert_name(&s, to_server[0]);
		serve(&s);
	}
	open_side(&client, prov);
	insert_name(&client, to_client[0]);
	send_name(&client, to_server[1]);
	printf("--- %s: %" PRIu64 " requests, %d threads x %d in flight, inject size %zu%s%s\n", prov, total, threads,
	       SLOTS, client.inject_size, serialise ? ", calls serialised" : "",
	       recv_first ? ", receive first" : "");
	fflush(stdout);

	pthread_t thread_ids[THREADS];
	for (int t = 0; t < threads; t++)
		if (pthread_create(&thread_ids[t], NULL, client_thread, (void *)(intptr_t)t)) {
			fprintf(stderr, "pthread_create failed\n");
			return 1;
		}
	uint64_t seen = 0;
	long long last = now_ms();
	while (atomic_load(&answers) < total) {
		usleep(100000);
		uint64_t c = atomic_load(&completions);
		if (c != seen) {
			seen = c;
			last = now_ms();
		} else if (now_ms() - last > STALL_SECONDS * 1000) {
			printf("stall: no completion for %d s after %" PRIu64 " answers\n", STALL_SECONDS,
			       (uint64_t)atomic_load(&answers));
			for (int t = 0; t < threads; t++) {
				printf("  thread %d: inside %s for %lld ms\n", t, where_name[atomic_load(&where[t])],
				       now_ms() - atomic_load(&since[t]));
				for (int i = 0; i < SLOTS; i++) {
					struct request *r = &slots[t][i];
					static const char *did[] = {"not received", "received, not answered",
								    "received and answered"};
					if (r->busy)
						printf("    request %" PRIu64 " (%zu bytes, %s): %s, %s; server: %s\n",
						       r->seq, r->len, r->len <= client.inject_size ? "injected" : "sent",
						       atomic_load(&r->sent) ? "send done" : "send not done",
						       atomic_load(&r->answered) ? "answered" : "no answer",
						       did[atomic_load(&server_did[r->seq])]);
				}
			}
			fflush(stdout);
			kill(server, SIGKILL);
			_exit(2);
		}
	}
	for (int t = 0; t < threads; t++)
		pthread_join(thread_ids[t], NULL);
	printf("ok: %" PRIu64 " answers checked\n", (uint64_t)atomic_load(&answers));
	kill(server, SIGKILL);
	waitpid(server, NULL, 0);
	CHECK(fi_close(&client.ep->fid));
	CHECK(fi_close(&client.av->fid));
	CHECK(fi_close(&client.cq->fid));
	CHECK(fi_close(&client.domain->fid));
	CHECK(fi_close(&client.fabric->fid));
	fi_freeinfo(client.info);
	return 0;
}
