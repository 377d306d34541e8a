/*
 * rma_refused.c - RMA accesses the target did not grant, with plain libfabric.
 *
 * A target registers 64 KiB with FI_REMOTE_READ|FI_REMOTE_WRITE (plus 4 KiB
 * of unregistered guard bytes right after it) and 4 KiB with FI_REMOTE_READ
 * only, and sends (addr, len, key) of both to an initiator. The initiator
 * tries ONE access the target did not grant, waits up to 10 s for its
 * completion, and reports what it saw; the target then checks its memory.
 * Every case runs in a fresh pair of processes (fork), so a refusal that
 * tears down the connection cannot affect the next case:
 *
 *   valid-write     control: fi_writemsg, 512 bytes at addr, FI_DELIVERY_COMPLETE
 *                   (must succeed and change exactly those bytes)
 *   write-past-end  fi_writemsg, 512 bytes at addr+len, FI_DELIVERY_COMPLETE
 *   read-past-end   fi_read, 512 bytes at addr+len
 *   wrong-key       fi_writemsg, 512 bytes at addr with key+0x1000,
 *                   FI_DELIVERY_COMPLETE
 *   write-read-only fi_writemsg, 512 bytes to the FI_REMOTE_READ-only region,
 *                   FI_DELIVERY_COMPLETE
 *
 * Build: cc -O2 -Wall rma_refused.c -lfabric -o /tmp/rma_refused
 * Run:   /tmp/rma_refused PROVIDER rdm|msg [--plain] [CASE...]  (default: all)
 *        --plain: writes without FI_DELIVERY_COMPLETE (the provider's default
 *        completion level; a success then says nothing about the target)
 *        e.g. /tmp/rma_refused 'tcp;ofi_rxm' rdm
 *             /tmp/rma_refused tcp msg        (control: connected endpoint)
 * Exit status: 0 if the control succeeded and every other case was refused
 * with the memory intact, 1 otherwise, 2 on a setup error.
 *
 * Observed on this machine (Debian 12, libfabric 1.17.0-3), exit status after
 * each run:
 *
 * $ /tmp/rma_refused tcp msg     (control; and net msg with prov_errno 115)
 * prints the same lines as 'tcp;ofi_rxm' rdm below: exit status 0.
 *
 * $ /tmp/rma_refused 'tcp;ofi_rxm' rdm
 * === writes with FI_DELIVERY_COMPLETE
 * --- tcp;ofi_rxm rdm: valid-write
 * initiator: SUCCESS completion after 0.001 s
 * target: memory WRITTEN exactly as asked
 * --- tcp;ofi_rxm rdm: write-past-end
 * initiator: ERROR completion after 0.001 s: err 125 (Operation canceled), prov_errno 2 (No such file or directory)
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- tcp;ofi_rxm rdm: read-past-end
 * initiator: ERROR completion after 0.001 s: err 125 (Operation canceled), prov_errno 2 (No such file or directory)
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- tcp;ofi_rxm rdm: wrong-key
 * initiator: ERROR completion after 0.001 s: err 125 (Operation canceled), prov_errno 2 (No such file or directory)
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- tcp;ofi_rxm rdm: write-read-only
 * initiator: ERROR completion after 0.001 s: err 125 (Operation canceled), prov_errno 2 (No such file or directory)
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * (exit status 0)
 *
 * $ /tmp/rma_refused net rdm
 * === writes with FI_DELIVERY_COMPLETE
 * --- net rdm: valid-write
 * initiator: SUCCESS completion after 0.001 s
 * target: memory WRITTEN exactly as asked
 * --- net rdm: write-past-end
 * initiator: ERROR completion after 0.001 s: err 125 (Operation canceled), prov_errno 115 (Operation now in progress)
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- net rdm: read-past-end
 * initiator: ERROR completion after 0.001 s: err 125 (Operation canceled), prov_errno 115 (Operation now in progress)
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- net rdm: wrong-key
 * initiator: ERROR completion after 0.001 s: err 125 (Operation canceled), prov_errno 115 (Operation now in progress)
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- net rdm: write-read-only
 * initiator: ERROR completion after 0.001 s: err 125 (Operation canceled), prov_errno 115 (Operation now in progress)
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * (exit status 0)
 *
 * $ /tmp/rma_refused shm rdm
 * === writes with FI_DELIVERY_COMPLETE
 * --- shm rdm: valid-write
 * initiator: SUCCESS completion after 0.001 s
 * target: memory WRITTEN exactly as asked
 * --- shm rdm: write-past-end
 * initiator: NO completion within 10 s
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- shm rdm: read-past-end
 * initiator: SUCCESS completion after 0.000 s; the read returned the target's UNREGISTERED bytes after the region
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- shm rdm: wrong-key
 * initiator: NO completion within 10 s
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- shm rdm: write-read-only
 * initiator: NO completion within 10 s
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * (exit status 1)
 *
 * $ /tmp/rma_refused 'udp;ofi_rxd' rdm
 * === writes with FI_DELIVERY_COMPLETE
 * --- udp;ofi_rxd rdm: valid-write
 * initiator: SUCCESS completion after 0.003 s
 * target: memory WRITTEN exactly as asked
 * --- udp;ofi_rxd rdm: write-past-end
 * initiator: NO completion within 10 s
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- udp;ofi_rxd rdm: read-past-end
 * initiator: NO completion within 10 s
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- udp;ofi_rxd rdm: wrong-key
 * initiator: NO completion within 10 s
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- udp;ofi_rxd rdm: write-read-only
 * initiator: NO completion within 10 s
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * (exit status 1)
 *
 * $ /tmp/rma_refused shm rdm --plain
 * === writes with default completion
 * --- shm rdm: valid-write
 * initiator: SUCCESS completion after 0.000 s
 * target: memory WRITTEN exactly as asked
 * --- shm rdm: write-past-end
 * initiator: SUCCESS completion after 0.000 s
 * target: memory CHANGED (exposed intact, guard after it changed, read-only intact)
 * --- shm rdm: read-past-end
 * initiator: SUCCESS completion after 0.000 s; the read returned the target's UNREGISTERED bytes after the region
 * target: memory INTACT (exposed intact, guard after it intact, read-only intact)
 * --- shm rdm: wrong-key
 * initiator: SUCCESS completion after 0.000 s
 * target: memory CHANGED (exposed changed, guard after it intact, read-only intact)
 * --- shm rdm: write-read-only
 * initiator: SUCCESS completion after 0.000 s
 * target: memory CHANGED (exposed intact, guard after it intact, read-only changed)
 * (exit status 1)
 *
 * Not shown: 'tcp;ofi_rxm' rdm --plain: the three writes complete with success (a
 * default, transmit-level completion says nothing about the target), the
 * read fails as above, memory intact; FI_SHM_DISABLE_CMA=1 with shm --plain:
 * the writes complete with success and memory stays intact, read-past-end
 * gets no completion within 10 s.
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
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#define EXPOSED (64 * 1024) /* registered read/write bytes */
#define GUARD 4096          /* unregistered bytes after them */
#define RO_LEN 4096         /* registered read-only bytes */
#define XFER 512            /* bytes per refused access */
#define OP_TIMEOUT 10.0     /* seconds to wait for the access's completion */
#define OOB_TIMEOUT 30.0    /* seconds to wait for the other process */
#define SETTLE 1.0          /* seconds the target polls on before checking memory */

static const char *role = "main";
/* FI_DELIVERY_COMPLETE on the writes, or 0 with --plain (default completion). */
static uint64_t write_flags = FI_DELIVERY_COMPLETE;

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

enum access { VALID_WRITE, WRITE_PAST_END, READ_PAST_END, WRONG_KEY, WRITE_READ_ONLY, NCASES };
static const char *case_names[NCASES] = {"valid-write", "write-past-end", "read-past-end",
					 "wrong-key", "write-read-only"};

/* What the target tells the initiator about one region. */
struct remote {
	uint64_t addr, len, key;
};

struct proc {
	const char *prov;
	int msg; /* FI_EP_MSG (connect/accept) instead of FI_EP_RDM */
	int oob; /* socketpair end to the other process */
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_eq *eq;
	struct fid_pep *pep;
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

static uint8_t pattern(size_t i) { return (uint8_t)(i * 7 + 1); }

/* ---- libfabric steps ------------------------------------------------- */

static void get_info(struct proc *p)
{
	struct fi_info *hints = fi_allocinfo();
	int shm = !strcmp(p->prov, "shm");

	if (!hints)
		die("fi_allocinfo failed");
	hints->caps = FI_MSG | FI_RMA;
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->ep_attr->type = p->msg ? FI_EP_MSG : FI_EP_RDM;
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

static void open_domain(struct proc *p)
{
	struct fi_cq_attr cq_attr = {.size = 64, .format = FI_CQ_FORMAT_CONTEXT,
				     .wait_obj = FI_WAIT_NONE};
	struct fi_eq_attr eq_attr = {.size = 16, .wait_obj = FI_WAIT_UNSPEC};

	check(fi_fabric(p->info->fabric_attr, &p->fabric, NULL));
	check(fi_domain(p->fabric, p->info, &p->domain, NULL));
	check(fi_cq_open(p->domain, &cq_attr, &p->cq, NULL));
	if (p->msg)
		check(fi_eq_open(p->fabric, &eq_attr, &p->eq, NULL));
}

/* Binds the CQ (and EQ or AV) to a new endpoint and enables it. */
static void open_ep(struct proc *p, struct fi_info *info)
{
	check(fi_endpoint(p->domain, info, &p->ep, NULL));
	check(fi_ep_bind(p->ep, &p->cq->fid, FI_TRANSMIT | FI_RECV));
	if (p->msg) {
		check(fi_ep_bind(p->ep, &p->eq->fid, 0));
	} else {
		struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};
		check(fi_av_open(p->domain, &av_attr, &p->av, NULL));
		check(fi_ep_bind(p->ep, &p->av->fid, 0));
	}
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

static struct remote describe(struct proc *p, struct fid_mr *mr, void *buf, size_t len)
{
	struct remote r = {.len = len, .key = fi_mr_key(mr)};

	if (r.key == FI_KEY_NOTAVAIL)
		die("fi_mr_key: FI_KEY_NOTAVAIL");
	r.addr = (p->info->domain_attr->mr_mode & FI_MR_VIRT_ADDR) ? (uintptr_t)buf : 0;
	return r;
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

static void print_err(const char *who, const char *when, struct proc *p,
		      struct fi_cq_err_entry *e)
{
	printf("%s: ERROR completion%s: err %d (%s), prov_errno %d (%s)\n", who, when, e->err,
	       fi_strerror(e->err), e->prov_errno,
	       fi_cq_strerror(p->cq, e->prov_errno, e->err_data, NULL, 0));
}

/* Drives progress (manual progress providers) and reports anything unexpected. */
static void progress(struct proc *p)
{
	struct fi_cq_err_entry err;
	int r = cq_poll(p, &err);

	if (r == 1)
		printf("%s: (late) success completion\n", role);
	else if (r < 0)
		print_err(role, " (late)", p, &err);
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

static void send_name(struct proc *p, fid_t fid)
{
	char name[256];
	size_t len = sizeof name;

	check(fi_getname(fid, name, &len));
	oob_send(p, &len, sizeof len);
	oob_send(p, name, len);
}

static size_t recv_name(struct proc *p, char name[256])
{
	size_t len;

	oob_recv(p, &len, sizeof len);
	if (len > 256)
		die("address too long");
	oob_recv(p, name, len);
	return len;
}

/* RDM: swap addresses and insert the peer into the AV. */
static void rdm_exchange(struct proc *p)
{
	char name[256];
	int n;

	send_name(p, &p->ep->fid);
	recv_name(p, name);
	n = fi_av_insert(p->av, name, 1, &p->peer, 0, NULL);
	if (n != 1)
		die("fi_av_insert: %d inserted (%s)", n, fi_strerror(n < 0 ? -n : 0));
}

/* Waits for one connection-manager event of the given type. */
static struct fi_info *wait_cm(struct proc *p, uint32_t want)
{
	union {
		struct fi_eq_cm_entry cm;
		char bytes[512];
	} entry;
	double end = now() + OOB_TIMEOUT;
	uint32_t event;

	for (;;) {
		ssize_t n = fi_eq_read(p->eq, &event, &entry, sizeof entry, 0);
		if (n == -FI_EAVAIL) {
			struct fi_eq_err_entry e = {0};
			if (fi_eq_readerr(p->eq, &e, 0) < 0)
				die("fi_eq_read: an error event that fi_eq_readerr cannot read");
			die("fi_eq_read: error event: %s (prov_errno %d)", fi_strerror(e.err),
			    e.prov_errno);
		}
		if (n > 0 && event == want)
			return entry.cm.info;
		if (n > 0)
			die("fi_eq_read: unexpected event %u", event);
		if (n != -FI_EAGAIN)
			die("fi_eq_read: %s (%zd)", fi_strerror((int)-n), n);
		if (now() > end)
			die("fi_eq_read: no event %u within %.0f s", want, OOB_TIMEOUT);
	}
}

/* MSG target: listen on a passive endpoint, accept the initiator. */
static void msg_accept(struct proc *p)
{
	struct fi_info *req;

	check(fi_passive_ep(p->fabric, p->info, &p->pep, NULL));
	check(fi_pep_bind(p->pep, &p->eq->fid, 0));
	check(fi_listen(p->pep));
	send_name(p, &p->pep->fid);
	req = wait_cm(p, FI_CONNREQ);
	open_ep(p, req);
	check(fi_accept(p->ep, NULL, 0));
	wait_cm(p, FI_CONNECTED);
	fi_freeinfo(req);
}

/* MSG initiator: connect to the target's passive endpoint. */
static void msg_connect(struct proc *p)
{
	char name[256];

	open_ep(p, p->info);
	recv_name(p, name);
	check(fi_connect(p->ep, name, NULL, 0));
	wait_cm(p, FI_CONNECTED);
}

static void setup(struct proc *p, int target)
{
	get_info(p);
	open_domain(p);
	if (p->msg)
		target ? msg_accept(p) : msg_connect(p);
	else {
		open_ep(p, p->info);
		rdm_exchange(p);
	}
}

/* ---- the two processes ------------------------------------------------ */

static int intact(const uint8_t *buf, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (buf[i] != pattern(i))
			return 0;
	return 1;
}

static int target(struct proc *p, enum access which)
{
	uint8_t *rw = aligned_alloc(4096, EXPOSED + GUARD), *ro = aligned_alloc(4096, RO_LEN);
	struct remote regions[2];
	struct fid_mr *rw_mr, *ro_mr;
	char done;
	int ok;

	for (size_t i = 0; i < EXPOSED + GUARD; i++)
		rw[i] = pattern(i);
	for (size_t i = 0; i < RO_LEN; i++)
		ro[i] = pattern(i);
	setup(p, 1);
	rw_mr = reg_mr(p, rw, EXPOSED, FI_REMOTE_READ | FI_REMOTE_WRITE, 1);
	ro_mr = reg_mr(p, ro, RO_LEN, FI_REMOTE_READ, 2);
	regions[0] = describe(p, rw_mr, rw, EXPOSED);
	regions[1] = describe(p, ro_mr, ro, RO_LEN);
	oob_send(p, regions, sizeof regions);

	oob_recv(p, &done, 1); /* polls the CQ until the initiator is done */
	for (double end = now() + SETTLE; now() < end;)
		progress(p); /* lets a late access land before the check */
	if (which == VALID_WRITE) {
		size_t i = 0;
		while (i < XFER && rw[i] == 0xee)
			i++;
		ok = i == XFER && intact(rw, XFER, EXPOSED + GUARD) && intact(ro, 0, RO_LEN);
		printf("target: memory %s\n", ok ? "WRITTEN exactly as asked" : "NOT as written");
	} else {
		ok = intact(rw, 0, EXPOSED) && intact(rw, EXPOSED, EXPOSED + GUARD) &&
		     intact(ro, 0, RO_LEN);
		printf("target: memory %s (exposed %s, guard after it %s, read-only %s)\n",
		       ok ? "INTACT" : "CHANGED", intact(rw, 0, EXPOSED) ? "intact" : "changed",
		       intact(rw, EXPOSED, EXPOSED + GUARD) ? "intact" : "changed",
		       intact(ro, 0, RO_LEN) ? "intact" : "changed");
	}
	fflush(stdout);
	oob_send(p, "b", 1);
	return ok ? 0 : 1;
}

/* Posts the access; returns the call's result after FI_EAGAIN retries. */
static ssize_t post(struct proc *p, enum access which, struct remote *rw, struct remote *ro,
		    void *buf, void *desc, struct fi_context2 *ctx)
{
	struct iovec iov = {.iov_base = buf, .iov_len = XFER};
	struct fi_rma_iov rma = {.addr = rw->addr, .len = XFER, .key = rw->key};
	struct fi_msg_rma msg = {.msg_iov = &iov, .desc = &desc, .iov_count = 1,
				 .addr = p->peer, .rma_iov = &rma, .rma_iov_count = 1,
				 .context = ctx};
	double end = now() + OP_TIMEOUT;
	ssize_t rc;

	if (which == WRITE_PAST_END)
		rma.addr = rw->addr + rw->len;
	else if (which == WRONG_KEY)
		rma.key = rw->key + 0x1000;
	else if (which == WRITE_READ_ONLY)
		rma = (struct fi_rma_iov){.addr = ro->addr, .len = XFER, .key = ro->key};
	do {
		if (which == READ_PAST_END)
			rc = fi_read(p->ep, buf, XFER, desc, p->peer, rw->addr + rw->len,
				     rw->key, ctx);
		else
			rc = fi_writemsg(p->ep, &msg, write_flags | FI_COMPLETION);
		if (rc == -FI_EAGAIN)
			progress(p);
	} while (rc == -FI_EAGAIN && now() < end);
	return rc;
}

/* What a successful read past the end put into the initiator's buffer. */
static const char *read_result(const uint8_t *buf)
{
	size_t old = 0, guard = 0;

	for (size_t i = 0; i < XFER; i++) {
		old += buf[i] == 0xee;
		guard += buf[i] == pattern(EXPOSED + i);
	}
	if (old == XFER)
		return "nothing (buffer unchanged)";
	if (guard == XFER)
		return "the target's UNREGISTERED bytes after the region";
	return "other bytes";
}

static int initiator(struct proc *p, enum access which)
{
	static struct fi_context2 ctx;
	struct fi_cq_err_entry err;
	struct remote regions[2];
	uint8_t *buf = aligned_alloc(4096, XFER);
	struct fid_mr *mr = NULL;
	double start, end;
	char when[32];
	int r = 0, refused;
	ssize_t rc;
	char bye;

	memset(buf, 0xee, XFER);
	setup(p, 0);
	if (p->info->domain_attr->mr_mode & FI_MR_LOCAL)
		mr = reg_mr(p, buf, XFER, FI_READ | FI_WRITE, 3);
	oob_recv(p, regions, sizeof regions);

	rc = post(p, which, &regions[0], &regions[1], buf, mr ? fi_mr_desc(mr) : NULL, &ctx);
	if (rc) {
		printf("initiator: the call FAILED: %s (%zd)\n", fi_strerror((int)-rc), rc);
		refused = 1;
	} else {
		start = now();
		end = start + OP_TIMEOUT;
		while (!(r = cq_poll(p, &err)) && now() < end)
			;
		snprintf(when, sizeof when, " after %.3f s", now() - start);
		if (r == 1 && which == READ_PAST_END)
			printf("initiator: SUCCESS completion%s; the read returned %s\n", when,
			       read_result(buf));
		else if (r == 1)
			printf("initiator: SUCCESS completion%s\n", when);
		else if (r < 0)
			print_err("initiator", when, p, &err);
		else
			printf("initiator: NO completion within %.0f s\n", OP_TIMEOUT);
		refused = r < 0;
	}
	fflush(stdout);
	oob_send(p, "d", 1);
	oob_recv(p, &bye, 1); /* keeps polling: reports a late completion */
	return refused == (which != VALID_WRITE) ? 0 : 1;
}

/* Runs one case in a fresh pair of processes; returns 0 if it behaved as
 * documented (the control written, any other access refused, memory intact). */
static int run_case(const char *prov, int msg, enum access which)
{
	int sv[2], status, bad = 0;
	pid_t pids[2];

	printf("--- %s %s: %s\n", prov, msg ? "msg" : "rdm", case_names[which]);
	fflush(stdout);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair failed");
	for (int t = 0; t < 2; t++) {
		pids[t] = fork();
		if (pids[t] == 0) {
			struct proc p = {.prov = prov, .msg = msg, .oob = sv[t],
					 .peer = FI_ADDR_UNSPEC};
			role = t ? "initiator" : "target";
			close(sv[!t]);
			alarm(60); /* backstop: nothing may hang */
			exit(t ? initiator(&p, which) : target(&p, which));
		}
	}
	close(sv[0]);
	close(sv[1]);
	for (int t = 0; t < 2; t++) {
		waitpid(pids[t], &status, 0);
		if (WIFSIGNALED(status))
			printf("%s: killed by signal %d (%s)\n", t ? "initiator" : "target",
			       WTERMSIG(status), strsignal(WTERMSIG(status)));
		bad |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
	}
	return bad;
}

int main(int argc, char **argv)
{
	int msg, bad = 0, ran = 0, first = 3;

	if (argc < 3 || (strcmp(argv[2], "rdm") && strcmp(argv[2], "msg")))
		die("usage: %s PROVIDER rdm|msg [--plain] [valid-write|write-past-end|"
		    "read-past-end|wrong-key|write-read-only...]", argv[0]);
	msg = !strcmp(argv[2], "msg");
	signal(SIGPIPE, SIG_IGN); /* a peer that died shows as a failed write */
	if (argc > 3 && !strcmp(argv[3], "--plain")) {
		write_flags = 0;
		first = 4;
	}
	printf("=== writes with %s\n", write_flags ? "FI_DELIVERY_COMPLETE" : "default completion");
	for (int c = 0; c < NCASES; c++) {
		int wanted = argc == first;
		for (int a = first; a < argc; a++)
			wanted |= !strcmp(argv[a], case_names[c]);
		if (wanted) {
			bad |= run_case(argv[1], msg, c);
			ran++;
		}
	}
	if (!ran)
		die("no such case");
	return bad;
}
