/*
 * shm_many_requests.c - many tagged requests outstanding at once, with plain
 * libfabric: the pattern of the Rust transport's request/response.
 *
 * A client posts N answer receives (fi_trecv, tag ANSWER|i, ignore 0) and
 * sends N requests (fi_tsenddata, tag REQUEST|i, CQ data 0) back to back.
 * A server posts ONE receive at a time (tag REQUEST, ignore the id bits),
 * and answers each request it gets (fi_tsenddata, tag ANSWER|i) before
 * posting the next receive. Both sides call fi_cq_read while they wait; each
 * gives up after 10 s without progress. The parent reports how many answers
 * the client got.
 *
 * Build: cc -O2 -Wall shm_many_requests.c -lfabric -o /tmp/shm_many_requests
 * Run:   /tmp/shm_many_requests PROVIDER N      e.g.
 *        /tmp/shm_many_requests shm 100
 *        /tmp/shm_many_requests 'tcp;ofi_rxm' 100   (control)
 * Exit status: 0 if the client got all N answers, 1 if not, 2 on a setup error.
 *
 * Observed on this machine (Debian 12, libfabric 1.17.0-3):
 *
 * $ /tmp/shm_many_requests shm 100      (three runs: 33, 29 and 2 answers)
 * --- shm: 100 requests outstanding at once, the server receiving one at a time
 * client: 100 requests sent (completed), 33 of 100 answers received -- then nothing for 10 s
 * server: answered 33, then no request within 10 s
 * (exit status 1)
 *
 * $ /tmp/shm_many_requests shm 20
 * client: 20 requests sent (completed), 13 of 20 answers received -- then nothing for 10 s
 * server: answered 13, then no request within 10 s
 *
 * $ /tmp/shm_many_requests shm 4       (and 4 of 8 with 8)
 * client: 4 requests sent (completed), 3 of 4 answers received -- then nothing for 10 s
 *
 * $ /tmp/shm_many_requests shm 2
 * client: 2 requests sent (completed), 2 of 2 answers received
 *
 * $ /tmp/shm_many_requests 'tcp;ofi_rxm' 100            (control)
 * client: 100 requests sent (completed), 100 of 100 answers received
 * server: answered 100
 * (exit status 0)
 *
 * So shm reports every request sent, yet the server's posted receive stops
 * matching the requests that wait unexpected at its endpoint.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>

#define REQUEST (1ULL << 62)
#define ANSWER (2ULL << 62)
#define ID_MASK ((1ULL << 62) - 1)
#define MAX_N 4096

struct side {
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_cq *cq;
	struct fid_av *av;
	struct fid_ep *ep;
	fi_addr_t peer;
};

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

#define CHECK(call)                                                              \
	do {                                                                     \
		int ret_ = (int)(call);                                          \
		if (ret_) {                                                      \
			fprintf(stderr, "%s: %s\n", #call, fi_strerror(-ret_)); \
			exit(2);                                                 \
		}                                                                \
	} while (0)

static void open_side(struct side *s, const char *prov, int sock)
{
	struct fi_info *hints = fi_allocinfo();
	hints->ep_attr->type = FI_EP_RDM;
	hints->caps = FI_MSG | FI_TAGGED;
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->domain_attr->mr_mode =
		FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
	hints->fabric_attr->prov_name = strdup(prov);
	const char *node = strcmp(prov, "shm") ? "127.0.0.1" : NULL;
	CHECK(fi_getinfo(FI_VERSION(1, 17), node, NULL, node ? FI_SOURCE : 0, hints, &s->info));
	fi_freeinfo(hints);
	CHECK(fi_fabric(s->info->fabric_attr, &s->fabric, NULL));
	CHECK(fi_domain(s->fabric, s->info, &s->domain, NULL));
	struct fi_cq_attr cq_attr = {.size = 4 * MAX_N, .format = FI_CQ_FORMAT_TAGGED};
	CHECK(fi_cq_open(s->domain, &cq_attr, &s->cq, NULL));
	struct fi_av_attr av_attr = {.type = FI_AV_MAP};
	CHECK(fi_av_open(s->domain, &av_attr, &s->av, NULL));
	CHECK(fi_endpoint(s->domain, s->info, &s->ep, NULL));
	CHECK(fi_ep_bind(s->ep, &s->cq->fid, FI_TRANSMIT | FI_RECV));
	CHECK(fi_ep_bind(s->ep, &s->av->fid, 0));
	CHECK(fi_enable(s->ep));
	char name[256];
	size_t len = sizeof(name);
	CHECK(fi_getname(&s->ep->fid, name, &len));
	if (write(sock, &len, sizeof(len)) != sizeof(len) || write(sock, name, len) != (ssize_t)len)
		exit(2);
	char theirs[256];
	size_t theirs_len;
	if (read(sock, &theirs_len, sizeof(theirs_len)) != sizeof(theirs_len) ||
	    read(sock, theirs, theirs_len) != (ssize_t)theirs_len)
		exit(2);
	if (fi_av_insert(s->av, theirs, 1, &s->peer, 0, NULL) != 1)
		exit(2);
}

/* Reads one completion; returns 1 and its entry, 0 if none, exits on error. */
static int poll_one(struct side *s, struct fi_cq_tagged_entry *e)
{
	ssize_t ret = fi_cq_read(s->cq, e, 1);
	if (ret == 1)
		return 1;
	if (ret == -FI_EAGAIN)
		return 0;
	struct fi_cq_err_entry err = {0};
	fi_cq_readerr(s->cq, &err, 0);
	fprintf(stderr, "fi_cq_read: %s (%d)\n", fi_strerror(err.err), err.err);
	exit(1);
}

static void post(const char *what, ssize_t (*again)(struct side *, void *), struct side *s, void *arg)
{
	double start = now();
	ssize_t ret;
	struct fi_cq_tagged_entry e;
	while ((ret = again(s, arg)) == -FI_EAGAIN) {
		poll_one(s, &e); /* progress; the caller counts completions by context */
		if (now() - start > 10) {
			fprintf(stderr, "%s: still FI_EAGAIN after 10 s\n", what);
			exit(1);
		}
	}
	if (ret) {
		fprintf(stderr, "%s: %s\n", what, fi_strerror((int)-ret));
		exit(2);
	}
}

static char bufs[MAX_N][64];
static struct fi_context2 ctx[2 * MAX_N];
static uint64_t current;

static ssize_t post_request_recv(struct side *s, void *c)
{
	return fi_trecv(s->ep, bufs[0], sizeof(bufs[0]), NULL, FI_ADDR_UNSPEC, REQUEST, ID_MASK, c);
}

static ssize_t send_answer(struct side *s, void *c)
{
	return fi_tsenddata(s->ep, bufs[1], 16, NULL, 0, s->peer, ANSWER | current, c);
}

static ssize_t post_answer_recv(struct side *s, void *c)
{
	return fi_trecv(s->ep, bufs[current], sizeof(bufs[0]), NULL, FI_ADDR_UNSPEC, ANSWER | current, 0, c);
}

static ssize_t send_request(struct side *s, void *c)
{
	return fi_tsenddata(s->ep, bufs[MAX_N - 1], 16, NULL, 0, s->peer, REQUEST | current, c);
}

static int server(const char *prov, int sock, int n)
{
	struct side s;
	open_side(&s, prov, sock);
	struct fi_cq_tagged_entry e;
	int answered = 0;
	while (answered < n) {
		post("server fi_trecv", post_request_recv, &s, &ctx[0]);
		double start = now();
		int got = 0;
		while (!got) {
			if (poll_one(&s, &e) && e.op_context == &ctx[0])
				got = 1;
			if (!got && now() - start > 10) {
				printf("server: answered %d, then no request within 10 s\n", answered);
				return 1;
			}
		}
		current = e.tag & ID_MASK;
		post("server fi_tsenddata", send_answer, &s, &ctx[1]);
		answered++;
	}
	/* Keep progressing a moment so the last answers leave. */
	double start = now();
	while (now() - start < 2)
		poll_one(&s, &e);
	printf("server: answered %d\n", answered);
	return 0;
}

static int client(const char *prov, int sock, int n)
{
	struct side s;
	open_side(&s, prov, sock);
	for (current = 0; current < (uint64_t)n; current++) {
		post("client fi_trecv", post_answer_recv, &s, &ctx[current]);
		post("client fi_tsenddata", send_request, &s, &ctx[MAX_N + current]);
	}
	struct fi_cq_tagged_entry e;
	int answers = 0, sent = 0;
	double last = now();
	while (answers < n && now() - last < 10) {
		if (!poll_one(&s, &e))
			continue;
		last = now();
		if ((struct fi_context2 *)e.op_context >= &ctx[MAX_N])
			sent++;
		else
			answers++;
	}
	printf("client: %d requests sent (completed), %d of %d answers received%s\n", sent, answers, n,
	       answers < n ? " -- then nothing for 10 s" : "");
	return answers == n ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc != 3 || atoi(argv[2]) < 1 || atoi(argv[2]) > MAX_N - 2) {
		fprintf(stderr, "usage: %s PROVIDER N (1..%d)\n", argv[0], MAX_N - 2);
		return 2;
	}
	int n = atoi(argv[2]);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return 2;
	printf("--- %s: %d requests outstanding at once, the server receiving one at a time\n", argv[1], n);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0)
		return client(argv[1], sv[1], n);
	int srv = server(argv[1], sv[0], n);
	int status;
	waitpid(pid, &status, 0);
	int cli = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
	if (WIFSIGNALED(status))
		printf("client: KILLED by signal %d\n", WTERMSIG(status));
	return srv == 0 && cli == 0 ? 0 : 1;
}
