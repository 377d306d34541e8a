/*
 * rxm_trywait_after_close.c - fi_trywait on a tcp;ofi_rxm completion queue
 * whose endpoint has been closed, with plain libfabric.
 *
 * A peer process opens an RDM endpoint and posts receives. A client opens
 * one with a FI_WAIT_FD completion queue, posts 50 tagged receives and
 * sends, drives the queue the way an event loop does (fi_cq_read, then
 * fi_trywait, then poll(2) on the FI_GETWAIT descriptor for 5 ms), kills
 * the peer, drives 3 s more, cancels its receives, closes the endpoint and
 * the address vector, and keeps driving the (still open) queue for 1 s.
 *
 * Build: cc -O2 -Wall rxm_trywait_after_close.c -lfabric -o /tmp/rxm_trywait_after_close
 * Run:   /tmp/rxm_trywait_after_close 3          (three rounds)
 *
 * Observed on this machine (Debian 12, libfabric 1.17.0-3), every round:
 *
 * phase: peer killed, driving 3 s
 * phase: closing ep and av
 * phase: driving the CQ of the closed ep for 1 s
 * rxm_trywait:10968 terminated with signal 11 at PC=7f23a78650cc SP=7ffdddad0ec0.  Backtrace:
 * /lib/x86_64-linux-gnu/libfabric.so.1(+0xb00cc)[0x7f23a78650cc]
 * /lib/x86_64-linux-gnu/libfabric.so.1(+0x4469b)[0x7f23a77f969b]
 * /lib/x86_64-linux-gnu/libfabric.so.1(+0x44148)[0x7f23a77f9148]
 * ...                                   (the caller: drive() -> fi_trywait)
 * round 0: client exited 1
 *
 * The same libfabric offsets (+0xb00cc, +0x4469b, +0x44148) are the frames
 * of the crashes seen from Rust under fi_trywait.
 */
#include <poll.h>
#include <signal.h>
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

#define CHECK(call)                                                              \
	do {                                                                     \
		int ret_ = (int)(call);                                          \
		if (ret_) {                                                      \
			fprintf(stderr, "%s: %s\n", #call, fi_strerror(-ret_)); \
			exit(2);                                                 \
		}                                                                \
	} while (0)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

struct side {
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_cq *cq;
	struct fid_av *av;
	struct fid_ep *ep;
	fi_addr_t peer;
	int fd;
};

static struct fi_context2 ctx[4096];
static char buf[4096][64];

static void open_side(struct side *s, int sock)
{
	struct fi_info *hints = fi_allocinfo();
	hints->ep_attr->type = FI_EP_RDM;
	hints->caps = FI_MSG | FI_TAGGED;
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->domain_attr->threading = FI_THREAD_SAFE;
	hints->domain_attr->mr_mode =
		FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
	hints->fabric_attr->prov_name = strdup("tcp;ofi_rxm");
	CHECK(fi_getinfo(FI_VERSION(1, 17), "127.0.0.1", NULL, FI_SOURCE, hints, &s->info));
	fi_freeinfo(hints);
	CHECK(fi_fabric(s->info->fabric_attr, &s->fabric, NULL));
	CHECK(fi_domain(s->fabric, s->info, &s->domain, NULL));
	struct fi_cq_attr cq_attr = {.size = 8192, .format = FI_CQ_FORMAT_TAGGED, .wait_obj = FI_WAIT_FD};
	CHECK(fi_cq_open(s->domain, &cq_attr, &s->cq, NULL));
	CHECK(fi_control(&s->cq->fid, FI_GETWAIT, &s->fd));
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
	size_t tl;
	if (read(sock, &tl, sizeof(tl)) != sizeof(tl) || read(sock, theirs, tl) != (ssize_t)tl)
		exit(2);
	if (fi_av_insert(s->av, theirs, 1, &s->peer, 0, NULL) != 1)
		exit(2);
}

/* One round of the wait protocol: read, trywait, poll the fd briefly. */
static int drive(struct side *s)
{
	struct fi_cq_tagged_entry e;
	ssize_t r = fi_cq_read(s->cq, &e, 1);
	if (r == -FI_EAVAIL) {
		struct fi_cq_err_entry err = {0};
		fi_cq_readerr(s->cq, &err, 0);
		return 1;
	}
	if (r == 1)
		return 1;
	struct fid *f = &s->cq->fid;
	if (fi_trywait(s->fabric, &f, 1) == FI_SUCCESS) {
		struct pollfd p = {.fd = s->fd, .events = POLLIN};
		poll(&p, 1, 5);
	}
	return 0;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 1;
	setvbuf(stdout, NULL, _IONBF, 0);
	for (int round = 0; round < rounds; round++) {
		int sv[2];
		socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
		pid_t pid = fork();
		if (pid == 0) {
			/* the peer: receives, never answers, until killed */
			struct side s;
			open_side(&s, sv[1]);
			for (int i = 0; i < 64; i++)
				fi_trecv(s.ep, buf[i], 64, NULL, FI_ADDR_UNSPEC, 0, ~0ULL, &ctx[i]);
			for (;;)
				drive(&s);
		}
		pid_t client = fork();
		if (client == 0) {
			struct side s;
			open_side(&s, sv[0]);
			for (int i = 0; i < 50; i++) {
				fi_trecv(s.ep, buf[100 + i], 64, NULL, FI_ADDR_UNSPEC, 1000 + i, 0, &ctx[100 + i]);
				fi_tsend(s.ep, buf[200 + i], 16, NULL, s.peer, i, &ctx[200 + i]);
			}
			double t = now();
			while (now() - t < 0.1)
				drive(&s);
			kill(pid, SIGKILL);
			fprintf(stderr, "phase: peer killed, driving 3 s\n");
			t = now();
			while (now() - t < 3)
				drive(&s);
			for (int i = 0; i < 50; i++)
				fi_cancel(&s.ep->fid, &ctx[100 + i]);
			t = now();
			while (now() - t < 0.2)
				drive(&s);
			fprintf(stderr, "phase: closing ep and av\n");
			CHECK(fi_close(&s.ep->fid));
			CHECK(fi_close(&s.av->fid));
			fprintf(stderr, "phase: driving the CQ of the closed ep for 1 s\n");
			t = now();
			while (now() - t < 1)
				drive(&s);
			fprintf(stderr, "phase: closing cq\n");
			CHECK(fi_close(&s.cq->fid));
			CHECK(fi_close(&s.domain->fid));
			CHECK(fi_close(&s.fabric->fid));
			_exit(0);
		}
		int st;
		waitpid(client, &st, 0);
		waitpid(pid, NULL, 0);
		if (WIFSIGNALED(st)) {
			printf("round %d: client KILLED by signal %d\n", round, WTERMSIG(st));
			return 1;
		}
		printf("round %d: client exited %d\n", round, WEXITSTATUS(st));
	}
	return 0;
}
