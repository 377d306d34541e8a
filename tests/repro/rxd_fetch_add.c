/*
 * rxd_fetch_add.c - fetch-adds on one 8-byte counter, with plain libfabric.
 *
 * A target registers an 8-byte uint64_t counter (initially 0) with
 * FI_REMOTE_READ|FI_REMOTE_WRITE and sends (addr, key) to an initiator, then
 * keeps calling fi_cq_read while it waits. The initiator does N
 * fi_fetch_atomic(FI_UINT64, FI_SUM, operand 1) in a row, waiting up to 10 s
 * for each completion, and tells the target it is done. The target then
 * reads the counter directly (it must be N: each completion of an atomic
 * means it was performed at the target), polls its CQ for 2 s more and reads
 * it again. The parent reports how each process ended (a signal = a crash).
 *
 * Build: cc -O2 -Wall rxd_fetch_add.c -lfabric -o /tmp/rxd_fetch_add
 * Run:   /tmp/rxd_fetch_add PROVIDER N [--warm-up]     e.g.
 *        /tmp/rxd_fetch_add 'udp;ofi_rxd' 1
 *        /tmp/rxd_fetch_add 'udp;ofi_rxd' 50
 *        /tmp/rxd_fetch_add 'udp;ofi_rxd' 50 --warm-up
 *        /tmp/rxd_fetch_add shm 50                      (control)
 *        --warm-up: one fi_read of the counter before the fetch-adds, so that
 *        a fetch-add is not the first operation towards the target.
 * Exit status: 0 if every fetch-add completed, the fetched values were
 * 0..N-1 and the target's counter read N right after; 1 otherwise; 2 on a
 * setup error.
 *
 * Observed on this machine (Debian 12, libfabric 1.17.0-3):
 *
 * $ /tmp/rxd_fetch_add 'udp;ofi_rxd' 1        (the same in 3 of 3 runs)
 * --- udp;ofi_rxd: 1 fetch-add(s) of 1 on one uint64_t counter
 * initiator: 1 of 1 fetch-adds completed; 0 fetched the expected value (0, 1, 2, ...); last fetched 18446744073709551615
 * target: counter right after the initiator's 1 completion(s): 0
 * target: KILLED by signal 11 (Segmentation fault)
 * initiator: KILLED by signal 11 (Segmentation fault)
 * (exit status 1)
 *
 * $ /tmp/rxd_fetch_add 'udp;ofi_rxd' 50
 * --- udp;ofi_rxd: 50 fetch-add(s) of 1 on one uint64_t counter
 * initiator: fi_fetch_atomic: NO completion within 10 s
 * initiator: 3 of 50 fetch-adds completed; 0 fetched the expected value (0, 1, 2, ...); last fetched 18446744073709551615
 * initiator: write to the other process failed
 * target: KILLED by signal 11 (Segmentation fault)
 * initiator: exited with status 2
 * (exit status 1)
 *
 * $ /tmp/rxd_fetch_add 'udp;ofi_rxd' 50
 * --- udp;ofi_rxd: 50 fetch-add(s) of 1 on one uint64_t counter
 * target: KILLED by signal 11 (Segmentation fault)
 * initiator: KILLED by signal 11 (Segmentation fault)
 * (exit status 1)
 *
 * $ /tmp/rxd_fetch_add 'udp;ofi_rxd' 50 --warm-up
 * --- udp;ofi_rxd: 50 fetch-add(s) of 1 on one uint64_t counter, after a warm-up fi_read
 * initiator: warm-up fi_read completed, counter was 0
 * initiator: 50 of 50 fetch-adds completed; 50 fetched the expected value (0, 1, 2, ...); last fetched 49
 * target: counter right after the initiator's 50 completion(s): 50
 * target: counter after 2 s more of polling: 50
 * target: exited with status 0
 * initiator: exited with status 0
 * (exit status 0)
 *
 * $ /tmp/rxd_fetch_add shm 50
 * --- shm: 50 fetch-add(s) of 1 on one uint64_t counter
 * initiator: 50 of 50 fetch-adds completed; 50 fetched the expected value (0, 1, 2, ...); last fetched 49
 * target: counter right after the initiator's 50 completion(s): 50
 * target: counter after 2 s more of polling: 50
 * target: exited with status 0
 * initiator: exited with status 0
 * (exit status 0)
 *
 * 'tcp;ofi_rxm' 50 prints the same as shm 50 (net's RDM endpoints answer
 * fi_fetch_atomic with FI_ENOSYS). Both crashes are inside fi_cq_read (gdb on
 * a core: cq_poll -> libfabric.so.1 frames -> pc 0x2000000 in the initiator).
 * With --warm-up udp;ofi_rxd is correct (so it was when a plain fi_atomic
 * went first instead of the fi_read): the fault needs a fetch atomic to be
 * the first operation towards the peer.
 */
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_atomic.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>

#define OP_TIMEOUT 10.0  /* seconds to wait for each completion */
#define OOB_TIMEOUT 60.0 /* seconds to wait for the other process */
#define SETTLE 2.0       /* seconds the target polls on after the initiator is done */

static const char *role = "main";

#define die(...)                                                              \
	do {                                                                  \
		fprintf(stderr, "%s: ", role);                                \
		fprintf(stderr, __VA_ARGS__);                                 \
		fputc('\n', stderr);                                          \
		exit(2);                                                      \
	} while (0)

/* Every libfabric call that returns 0 on success goes through check(). */
#define check(call)                                                           \
	do {                                                                  \
		int rc_ = (int)(call);                                        \
		if (rc_)                                                      \
			die("%s: %s (%d)", #call, fi_strerror(-rc_), rc_);    \
	} while (0)

struct proc {
	const char *prov;
	int oob; /* socketpair end to the other process */
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_ep *ep;
	struct fid_cq *cq;
	struct fid_av *av;
	fi_addr_t peer;
};

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- libfabric steps ------------------------------------------------- */

static void get_info(struct proc *p)
{
	struct fi_info *hints = fi_allocinfo();
	int shm = !strcmp(p->prov, "shm");

	if (!hints)
		die("fi_allocinfo failed");
	hints->caps = FI_MSG | FI_RMA | FI_ATOMIC;
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->ep_attr->type = FI_EP_RDM;
	hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED |
				      FI_MR_PROV_KEY | FI_MR_ENDPOINT;
	hints->fabric_attr->prov_name = strdup(p->prov);
	check(fi_getinfo(FI_VERSION(1, 17), shm ? NULL : "127.0.0.1", NULL,
			 shm ? 0 : FI_SOURCE, hints, &p->info));
	fi_freeinfo(hints);
	/* libpsm2/libinfinipath, loaded with Debian's libfabric, catch SIGSEGV
	 * (print a backtrace, then exit 1): restore the default, so that a
	 * crash shows as a signal in the parent. */
	signal(SIGSEGV, SIG_DFL);
	signal(SIGBUS, SIG_DFL);
}

static void open_ep(struct proc *p)
{
	struct fi_cq_attr cq_attr = {.size = 64, .format = FI_CQ_FORMAT_CONTEXT,
				     .wait_obj = FI_WAIT_NONE};
	struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};

	check(fi_fabric(p->info->fabric_attr, &p->fabric, NULL));
	check(fi_domain(p->fabric, p->info, &p->domain, NULL));
	check(fi_cq_open(p->domain, &cq_attr, &p->cq, NULL));
	check(fi_av_open(p->domain, &av_attr, &p->av, NULL));
	check(fi_endpoint(p->domain, p->info, &p->ep, NULL));
	check(fi_ep_bind(p->ep, &p->cq->fid, FI_TRANSMIT | FI_RECV));
	check(fi_ep_bind(p->ep, &p->av->fid, 0));
	check(fi_enable(p->ep));
}

/* Registers buf; binds and enables it if the provider asks FI_MR_ENDPOINT. */
static struct fid_mr *reg_mr(struct proc *p, void *buf, size_t len, uint64_t access,
			     uint64_t requested_key)
{
	struct fid_mr *mr;

	check(fi_mr_reg(p->domain, buf, len, access, 0, requested_key, 0, &mr, NULL));
	if (p->info->domain_attr->mr_mode & FI_MR_ENDPOINT) {
		check(fi_mr_bind(mr, &p->ep->fid, 0));
		check(fi_mr_enable(mr));
	}
	return mr;
}

/* One fi_cq_read: 1 on a completion, -1 on an error entry (in *err), 0 if empty. */
static int cq_poll(struct proc *p, struct fi_cq_err_entry *err)
{
	struct fi_cq_entry comp;
	ssize_t n = fi_cq_read(p->cq, &comp, 1);

	if (n == 1)
		return 1;
	if (n == -FI_EAGAIN)
		return 0;
	if (n != -FI_EAVAIL)
		die("fi_cq_read: %s (%zd)", fi_strerror((int)-n), n);
	memset(err, 0, sizeof *err);
	n = fi_cq_readerr(p->cq, err, 0);
	if (n != 1)
		die("fi_cq_readerr: %s (%zd)", fi_strerror((int)-n), n);
	return -1;
}

static void print_err(struct proc *p, struct fi_cq_err_entry *e)
{
	printf("%s: ERROR completion: err %d (%s), prov_errno %d (%s)\n", role, e->err,
	       fi_strerror(e->err), e->prov_errno,
	       fi_cq_strerror(p->cq, e->prov_errno, e->err_data, NULL, 0));
}

/* Drives progress (manual progress providers) and reports anything unexpected. */
static void progress(struct proc *p)
{
	struct fi_cq_err_entry err;
	int r = cq_poll(p, &err);

	if (r == 1)
		printf("%s: unexpected completion\n", role);
	else if (r < 0)
		print_err(p, &err);
	fflush(stdout);
}

/* ---- out-of-band channel (socketpair), polling the CQ while waiting --- */

static void oob_send(struct proc *p, const void *buf, size_t len)
{
	if (write(p->oob, buf, len) != (ssize_t)len)
		die("write to the other process failed");
}

static void oob_recv(struct proc *p, void *buf, size_t len)
{
	double end = now() + OOB_TIMEOUT;
	size_t got = 0;

	while (got < len) {
		struct pollfd pfd = {.fd = p->oob, .events = POLLIN};
		if (now() > end)
			die("timed out waiting for the other process");
		if (p->ep)
			progress(p);
		if (poll(&pfd, 1, 1) > 0) {
			ssize_t n = read(p->oob, (char *)buf + got, len - got);
			if (n <= 0)
				die("the other process went away");
			got += n;
		}
	}
}

/* Swaps endpoint names and inserts the peer into the AV. */
static void exchange_names(struct proc *p)
{
	char name[256];
	size_t len = sizeof name;
	int n;

	check(fi_getname(&p->ep->fid, name, &len));
	oob_send(p, &len, sizeof len);
	oob_send(p, name, len);
	oob_recv(p, &len, sizeof len);
	if (len > sizeof name)
		die("address too long");
	oob_recv(p, name, len);
	n = fi_av_insert(p->av, name, 1, &p->peer, 0, NULL);
	if (n != 1)
		die("fi_av_insert: %d inserted (%s)", n, fi_strerror(n < 0 ? -n : 0));
}

/* ---- the two processes ------------------------------------------------ */

static uint64_t read_counter(const volatile uint64_t *counter) { return *counter; }

static int target(struct proc *p)
{
	volatile uint64_t *counter = aligned_alloc(4096, 4096);
	uint64_t remote[2], done, first, later;
	struct fid_mr *mr;

	*counter = 0;
	get_info(p);
	open_ep(p);
	exchange_names(p);
	mr = reg_mr(p, (void *)counter, sizeof *counter, FI_REMOTE_READ | FI_REMOTE_WRITE, 1);
	remote[0] = (p->info->domain_attr->mr_mode & FI_MR_VIRT_ADDR) ? (uintptr_t)counter : 0;
	remote[1] = fi_mr_key(mr);
	oob_send(p, remote, sizeof remote);

	oob_recv(p, &done, sizeof done); /* polls the CQ until the initiator is done */
	first = read_counter(counter);
	printf("target: counter right after the initiator's %llu completion(s): %llu\n",
	       (unsigned long long)done, (unsigned long long)first);
	fflush(stdout);
	for (double end = now() + SETTLE; now() < end;)
		progress(p);
	later = read_counter(counter);
	printf("target: counter after %.0f s more of polling: %llu\n", SETTLE,
	       (unsigned long long)later);
	fflush(stdout);
	oob_send(p, "b", 1);
	return first == done ? 0 : 1;
}

/* Waits for the one outstanding operation; returns 1 on a success completion. */
static int wait_completion(struct proc *p, const char *what, double end)
{
	struct fi_cq_err_entry err;
	int r;

	while (!(r = cq_poll(p, &err)) && now() < end)
		;
	if (r < 0) {
		printf("initiator: %s: ", what);
		print_err(p, &err);
	} else if (r == 0) {
		printf("initiator: %s: NO completion within %.0f s\n", what, OP_TIMEOUT);
	}
	fflush(stdout);
	return r == 1;
}

/* One fetch-add of 1 (*result gets the counter's previous value). */
static int fetch_add(struct proc *p, uint64_t *remote, uint64_t *operand, uint64_t *result,
		     void *desc[2])
{
	static struct fi_context2 ctx;
	double end = now() + OP_TIMEOUT;
	ssize_t rc;

	do {
		rc = fi_fetch_atomic(p->ep, operand, 1, desc[0], result, desc[1], p->peer,
				     remote[0], remote[1], FI_UINT64, FI_SUM, &ctx);
		if (rc == -FI_EAGAIN)
			progress(p);
	} while (rc == -FI_EAGAIN && now() < end);
	if (rc) {
		printf("initiator: fi_fetch_atomic FAILED: %s (%zd)\n", fi_strerror((int)-rc), rc);
		return 0;
	}
	return wait_completion(p, "fi_fetch_atomic", end);
}

/* --warm-up: an fi_read of the counter first, so that the fetch-adds are not
 * the first operation towards the target. */
static int warm_up(struct proc *p, uint64_t *remote, uint64_t *buf, void *desc)
{
	static struct fi_context2 ctx;
	double end = now() + OP_TIMEOUT;
	ssize_t rc;

	do {
		rc = fi_read(p->ep, buf, sizeof *buf, desc, p->peer, remote[0], remote[1], &ctx);
		if (rc == -FI_EAGAIN)
			progress(p);
	} while (rc == -FI_EAGAIN && now() < end);
	if (rc) {
		printf("initiator: fi_read FAILED: %s (%zd)\n", fi_strerror((int)-rc), rc);
		return 0;
	}
	if (!wait_completion(p, "fi_read (warm-up)", end))
		return 0;
	printf("initiator: warm-up fi_read completed, counter was %llu\n",
	       (unsigned long long)*buf);
	return 1;
}

static int initiator(struct proc *p, uint64_t n, int warm)
{
	uint64_t *operand = aligned_alloc(4096, 4096), *result = aligned_alloc(4096, 4096);
	uint64_t remote[2], done = 0, in_order = 0;
	void *desc[2] = {NULL, NULL};
	size_t count = 0;
	char bye;
	int rc;

	get_info(p);
	open_ep(p);
	exchange_names(p);
	rc = fi_fetch_atomicvalid(p->ep, FI_UINT64, FI_SUM, &count);
	if (rc)
		printf("initiator: note: fi_fetch_atomicvalid: %s (%d)\n", fi_strerror(-rc), rc);
	if (p->info->domain_attr->mr_mode & FI_MR_LOCAL) {
		desc[0] = fi_mr_desc(reg_mr(p, operand, 8, FI_READ | FI_WRITE, 2));
		desc[1] = fi_mr_desc(reg_mr(p, result, 8, FI_READ | FI_WRITE, 3));
	}
	oob_recv(p, remote, sizeof remote);

	*operand = 1;
	if (warm && !warm_up(p, remote, result, desc[1]))
		n = 0;
	for (uint64_t i = 0; i < n; i++) {
		*result = UINT64_MAX; /* a value no fetch-add here can return */
		if (!fetch_add(p, remote, operand, result, desc))
			break;
		done++;
		in_order += *result == i;
	}
	printf("initiator: %llu of %llu fetch-adds completed; %llu fetched the expected "
	       "value (0, 1, 2, ...); last fetched %llu\n",
	       (unsigned long long)done, (unsigned long long)n, (unsigned long long)in_order,
	       (unsigned long long)*result);
	fflush(stdout);
	oob_send(p, &done, sizeof done);
	oob_recv(p, &bye, 1);
	return done == n && in_order == n ? 0 : 1;
}

int main(int argc, char **argv)
{
	int sv[2], status, bad = 0, warm;
	pid_t pids[2];
	uint64_t n;

	warm = argc == 4 && !strcmp(argv[3], "--warm-up");
	if ((argc != 3 && !warm) || (n = strtoull(argv[2], NULL, 10)) == 0)
		die("usage: %s PROVIDER N [--warm-up]", argv[0]);
	printf("--- %s: %llu fetch-add(s) of 1 on one uint64_t counter%s\n", argv[1],
	       (unsigned long long)n, warm ? ", after a warm-up fi_read" : "");
	fflush(stdout);
	signal(SIGPIPE, SIG_IGN);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair failed");
	for (int t = 0; t < 2; t++) {
		pids[t] = fork();
		if (pids[t] == 0) {
			struct proc p = {.prov = argv[1], .oob = sv[t], .peer = FI_ADDR_UNSPEC};
			role = t ? "initiator" : "target";
			close(sv[!t]);
			alarm(n * OP_TIMEOUT + 2 * OOB_TIMEOUT); /* backstop: nothing may hang */
			exit(t ? initiator(&p, n, warm) : target(&p));
		}
	}
	close(sv[0]);
	close(sv[1]);
	for (int t = 0; t < 2; t++) {
		waitpid(pids[t], &status, 0);
		if (WIFSIGNALED(status))
			printf("%s: KILLED by signal %d (%s)\n", t ? "initiator" : "target",
			       WTERMSIG(status), strsignal(WTERMSIG(status)));
		else
			printf("%s: exited with status %d\n", t ? "initiator" : "target",
			       WEXITSTATUS(status));
		bad |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
	}
	return bad;
}
