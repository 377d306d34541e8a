/*
 * rxm_soak_rss.c - does tcp;ofi_rxm itself make resident memory grow during a
 * long message stream? The soak test (tests/tests/soak.rs) in plain libfabric.
 *
 * The program forks: the child receives, the parent sends; they swap endpoint
 * names over a socketpair. Both open what soak.rs opens: an RDM endpoint with
 * FI_MSG, mode FI_CONTEXT|FI_CONTEXT2, mr_mode LOCAL|VIRT_ADDR|ALLOCATED|
 * PROV_KEY|ENDPOINT, tx/rx size 256 (127.0.0.1 with FI_SOURCE for tcp), a CQ
 * of 256 entries in FI_CQ_FORMAT_MSG without a wait object, an FI_AV_UNSPEC
 * AV, one thread each. Every buffer is its own heap allocation, registered
 * (and bound to the endpoint) when the provider asks for FI_MR_LOCAL.
 * Message seq is 16 + (seq * 37) % 4080 bytes: seq, length and an FNV-1a
 * checksum in a 16-byte header, then bytes seq * 31 + i. The receiver keeps
 * 64 buffers of 4096 bytes posted (fi_recv, FI_ADDR_UNSPEC), waits for a
 * batch of 64, checks each message (length, checksum, seen once), reposts,
 * and acknowledges the count so far with an 8-byte fi_inject. The sender
 * fi_sends 64 messages, then reads its CQ until all 64 sends and the
 * acknowledgement completed, checks the count, reposts the ack receive. On
 * FI_EAGAIN a post is retried after an fi_cq_read (counted). Each process
 * samples its own RSS (/proc/self/statm) after 10 % and 50 % of the messages
 * and at the end.
 *
 * Build: cc -O2 -Wall tests/repro/rxm_soak_rss.c -lfabric -o /tmp/rxm_soak_rss
 * Run:   /tmp/rxm_soak_rss 'tcp;ofi_rxm' 300000
 *        /tmp/rxm_soak_rss shm 300000                      (control)
 * Extra: RSS_TRACE=K      print each process's RSS every K messages (stderr)
 *        RSS_SMAPS=1      list the mappings whose Rss grew (stderr)
 *        RSS_RANGE=A:LEN  also count resident pages of [A, A+LEN) (mincore)
 * Exit status: 0 if every message arrived once and intact, 1 if not or on a
 * stall, 2 on a setup error.
 *
 * Observed on this machine (Debian 12, libfabric 1.17.0-3, 2 CPUs, shared
 * with other builds, so the times vary by 3x between runs):
 *
 * $ /tmp/rxm_soak_rss 'tcp;ofi_rxm' 300000
 * tcp;ofi_rxm: 300000 messages in 11.1 s; fi_send EAGAIN 23983 (completions read meanwhile 0)
 * receiver: received 300000, missing 0, duplicated 0, corrupted 0; fi_inject EAGAIN 0
 * receiver: RSS at 10 % 76873728, 50 % 82636800, 100 % 88018944 bytes; growth 10->50 % +48.0 B/msg (+7.5 %), 10->100 % +41.3 B/msg; 1 threads; marks at 0.9, 3.9, 11.3 s
 * sender  : RSS at 10 % 94924800, 50 % 100773888, 100 % 106045440 bytes; growth 10->50 % +48.7 B/msg (+6.2 %), 10->100 % +41.2 B/msg; 1 threads; marks at 0.9, 3.9, 11.3 s
 * (exit status 0)
 *
 * $ /tmp/rxm_soak_rss shm 300000
 * shm: 300000 messages in 13.3 s; fi_send EAGAIN 81012 (completions read meanwhile 0)
 * receiver: received 300000, missing 0, duplicated 0, corrupted 0; fi_inject EAGAIN 0
 * receiver: RSS at 10 % 12324864, 50 % 12324864, 100 % 12333056 bytes; growth 10->50 % +0.0 B/msg (+0.0 %), 10->100 % +0.0 B/msg; 1 threads; marks at 0.6, 7.9, 13.5 s
 * sender  : RSS at 10 % 13230080, 50 % 13230080, 100 % 13230080 bytes; growth 10->50 % +0.0 B/msg (+0.0 %), 10->100 % +0.0 B/msg; 1 threads; marks at 0.6, 7.9, 13.5 s
 * (exit status 0)
 *
 * $ RSS_TRACE=50000 /tmp/rxm_soak_rss 'tcp;ofi_rxm' 1000000     (sender's trace shown)
 * tcp;ofi_rxm: 1000000 messages in 84.4 s; fi_send EAGAIN 13616 (completions read meanwhile 0)
 * receiver: received 1000000, missing 0, duplicated 0, corrupted 0; fi_inject EAGAIN 0
 * receiver: RSS at 10 % 80293888, 50 % 88076288, 100 % 88125440 bytes; growth 10->50 % +19.5 B/msg (+9.7 %), 10->100 % +8.7 B/msg; 1 threads; marks at 7.8, 47.7, 84.6 s
 * sender  : RSS at 10 % 98459648, 50 % 106168320, 100 % 106168320 bytes; growth 10->50 % +19.3 B/msg (+7.8 %), 10->100 % +8.6 B/msg; 1 threads; marks at 7.8, 47.7, 84.6 s
 * trace 12649: 50048 messages, 4.04 s, RSS 96022528
 * trace 12649: 100032 messages, 7.79 s, RSS 98459648     (+2437120 per 50,000: 48.7 B/msg)
 * trace 12649: 200000 messages, 19.39 s, RSS 103333888
 * trace 12649: 250048 messages, 21.29 s, RSS 105775104
 * trace 12649: 300032 messages, 24.49 s, RSS 106168320
 * trace 12649: 350016 ... 1000000 messages: RSS 106168320  (flat to the end)
 * (the receiver: the same shape, 48.0 B/msg, flat from 300032 on but for
 * +49 kB, which is this program's own 125 kB "seen" bitmap being written)
 *
 * So plain C shows exactly what the Rust soak test shows: with tcp;ofi_rxm
 * both processes grow by ~48 bytes per message (sender 48.7, receiver 48.0),
 * linearly in messages (not in time: the same per message at 0.3 s or 27 s
 * per 300,000), until ~260,000 messages, then are flat; shm is flat. The
 * growth is libfabric's, not the binding's. No libfabric thread is started
 * (/proc/self/task has 1 entry in each process at the end).
 *
 * Where it is: the receive/transmit completion ring of the internal tcp CQ
 * that rxm opens for its connections.
 *  - strace -e mmap shows no mmap/munmap during the stream (only brk for
 *    small things); the growth is first-touch page faults in memory mapped
 *    at setup. Among the setup mmaps, one of 12587008 bytes (12 MiB + 4 kB)
 *    in each process; `strace -k` puts it in __libc_calloc called from
 *    libfabric called from fi_enable() of our endpoint (open_side+0x23f is
 *    the control(FI_ENABLE) call).
 *  - RSS_RANGE on that exact range (setarch -R, address from strace):
 *      receiver: resident 1408 -> 7036 -> 12292 kB at 10 %, 50 %, 100 %
 *      sender:   resident 1432 -> 7144 -> 12292 kB
 *    i.e. 5628 / 5712 kB between 10 % and 50 %, while RSS grew by 5636 /
 *    5716 kB: all of the growth is in that one calloc, and at the end all of
 *    it is resident. (RSS_SMAPS shows it inside one large merged anonymous
 *    VMA of ~80-100 MB that also holds rxm's 16 MB buffer-pool chunks.)
 *  - In libfabric rxm opens its MSG-provider CQ with
 *      size = msg rx size (x universe size unless shared rx) +
 *             msg tx size x FI_UNIVERSE_SIZE
 *    (rxm_ep_msg_cq_open, prov/rxm/src/rxm_ep.c), and the util CQ under tcp
 *    keeps its entries in a circular queue of struct fi_cq_tagged_entry
 *    (48 bytes) with roundup_power_of_two(size) slots, calloc'ed
 *    (OFI_DECLARE_CIRQUE in include/ofi_rbuf.h, util_comp_cirq_create in
 *    prov/util/src/util_cq.c). Here: 4096 (srx) + 128 x 1024 = 135168 ->
 *    262144 slots x 48 B = 12 MiB. calloc of 12 MiB is a fresh mmap, so no
 *    page is resident until the write index first reaches it; every
 *    completion on the internal CQ writes the next slot, so one new page per
 *    85 completions until the index wraps after 262144 completions. Sender:
 *    64 send completions + 1 ack receive per 64 messages -> 48 x 65/64 =
 *    48.75 B/msg, wrap after 262144 x 64/65 = 258,111 messages. Receiver:
 *    64 receive completions per 64 messages (the ack is an inject, no
 *    completion) -> 48.0 B/msg, wrap after 262,144 messages. Both match the
 *    measurements (and the "~270,000 messages" seen from Rust). It is the
 *    first lap of a fixed ring, not a leak: it can never exceed 12 MiB per
 *    endpoint. (That it is the C library's malloc explains why jemalloc in
 *    the Rust process changes nothing.)
 *  - Upstream: ofiwg/libfabric PR #4332 ("prov/rxm: update tx, rx and CQ
 *    sizes": MSG CQ sized from the msg ep tx/rx sizes x FI_UNIVERSE_SIZE) and
 *    PR #5980 ("prov/rxm: Update message CQ size calculation to consider SRX
 *    context": "the provider defaults create a 262,144 entry CQ"). No issue
 *    reports the gradual RSS growth itself; it is the lazy commit of that
 *    ring.
 *
 * Knobs tried (100,000 messages each; growth between 10 % and 100 %):
 *    FI_UNIVERSE_SIZE=16              flat from 10 % (ring 8192 slots, 384 kB)
 *    FI_UNIVERSE_SIZE=4               flat from 10 %
 *    FI_OFI_RXM_MSG_TX_SIZE=64 FI_OFI_RXM_MSG_RX_SIZE=64
 *                                     48.0 / 48.8 (ring 131072 slots, 6 MiB;
 *                                     base RSS 75 -> 23 MB)
 *    FI_OFI_RXM_USE_SRX=0             48.0 / 48.8 (base RSS 75 -> 22 MB)
 *    FI_OFI_RXM_BUFFER_SIZE=4200      48.0 / 48.8 (base RSS 75 -> 26 MB)
 *    FI_OFI_RXM_RX_SIZE=256 FI_OFI_RXM_TX_SIZE=256     48.0 / 48.8
 *    FI_TCP_RX_SIZE=256 FI_TCP_TX_SIZE=256             48.0 / 48.8
 *    FI_TCP_IFACE=lo                                   48.0 / 48.8
 *    MALLOC_ARENA_MAX=1                                48.0 / 48.8
 *    MALLOC_TRIM_THRESHOLD_=0                          48.0 / 48.8
 * (receiver / sender B/msg.) Only FI_UNIVERSE_SIZE, which sizes the ring,
 * removes the growth within the run.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>

#define BATCH 64
#define MAX_LEN 4096
#define HEADER 16
#define STALL 60.0 /* seconds without progress before giving up */
#define MAX_MAPS 1024

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

/* ---- the messages: the same lengths, pattern and checksum as soak.rs ---- */

static size_t length(uint64_t seq)
{
	return HEADER + (size_t)((seq * 37) % (MAX_LEN - HEADER));
}

/* FNV-1a over the 8 little-endian bytes of seq, then the payload. */
static uint32_t checksum(uint64_t seq, const uint8_t *payload, size_t len)
{
	uint32_t h = 0x811c9dc5u;
	for (int i = 0; i < 8; i++)
		h = (h ^ (uint8_t)(seq >> (8 * i))) * 0x01000193u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ payload[i]) * 0x01000193u;
	return h;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Writes message seq into buf; returns its length. */
static size_t fill(uint64_t seq, uint8_t *buf)
{
	size_t len = length(seq);
	for (size_t i = 0; i < len - HEADER; i++)
		buf[HEADER + i] = (uint8_t)((size_t)seq * 31 + i);
	put32(buf, (uint32_t)seq);
	put32(buf + 4, (uint32_t)(seq >> 32));
	put32(buf + 8, (uint32_t)len);
	put32(buf + 12, checksum(seq, buf + HEADER, len - HEADER));
	return len;
}

/* The message's seq if intact (len bytes received), else -1 and why. */
static int64_t check(const uint8_t *buf, size_t len, char *why, size_t why_len)
{
	if (len < HEADER) {
		snprintf(why, why_len, "short message (%zu bytes)", len);
		return -1;
	}
	uint64_t seq = get32(buf) | (uint64_t)get32(buf + 4) << 32;
	size_t said = get32(buf + 8);
	if (said != len || len != length(seq)) {
		snprintf(why, why_len, "message %" PRIu64 ": %zu bytes, header says %zu", seq, len, said);
		return -1;
	}
	if (checksum(seq, buf + HEADER, len - HEADER) != get32(buf + 12)) {
		snprintf(why, why_len, "message %" PRIu64 ": checksum mismatch", seq);
		return -1;
	}
	return (int64_t)seq;
}

/* ---- memory ---- */

/* Resident memory of this process in bytes (/proc/self/statm, field 2). */
static uint64_t rss(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, resident = 0;
	if (f) {
		if (fscanf(f, "%lu %lu", &size, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static int threads(void)
{
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	if (d)
		closedir(d);
	return n;
}

/* With RSS_SMAPS=1 in the environment: each mapping's Rss at every mark, to
 * name the mappings that grew. */
struct mapping {
	unsigned long start, end;
	unsigned long rss_kb;
	char name[96];
};
static struct mapping maps[3][MAX_MAPS];
static int nmaps[3];

static void snapshot_maps(int mark)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int n = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long a, b, kb;
		char perms[8];
		int off = 0;
		if (sscanf(line, "%lx-%lx %7s %*s %*s %*s%n", &a, &b, perms, &off) >= 3 && off > 0 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			if (n == MAX_MAPS)
				break;
			struct mapping *m = &maps[mark][n++];
			m->start = a;
			m->end = b;
			m->rss_kb = 0;
			const char *p = line + off;
			while (*p == ' ')
				p++;
			snprintf(m->name, sizeof(m->name), "%s", *p && *p != '\n' ? p : "[anon]\n");
			m->name[strcspn(m->name, "\n")] = 0;
		} else if (n > 0 && sscanf(line, "Rss: %lu kB", &kb) == 1) {
			maps[mark][n - 1].rss_kb = kb;
		}
	}
	if (f)
		fclose(f);
	nmaps[mark] = n;
}

static void report_maps(const char *who, FILE *out)
{
	for (int i = 0; i < nmaps[2]; i++) {
		struct mapping *m = &maps[2][i];
		unsigned long before[2] = {0, 0};
		for (int mark = 0; mark < 2; mark++)
			for (int j = 0; j < nmaps[mark]; j++)
				if (maps[mark][j].start == m->start)
					before[mark] = maps[mark][j].rss_kb;
		if (m->rss_kb > before[0] + 16)
			fprintf(out, "  %s: mapping %lx-%lx (%lu kB) %s: Rss %lu -> %lu -> %lu kB\n", who, m->start,
				m->end, (m->end - m->start) / 1024, m->name, before[0], before[1], m->rss_kb);
	}
}

/* Resident memory sampled once 10 % and 50 % of the n messages are through,
 * and at the end, with the message count at each sample. */
struct samples {
	uint64_t rss[3];
	uint64_t at[3];
	double when[3];
	unsigned long range_kb[3];
};

static double t_start;

static int want_smaps;
/* RSS_RANGE=ADDR:LEN (hex address, bytes): also count the resident pages of
 * that range at every mark (mincore), e.g. the address strace shows for
 * libfabric's 12 MiB calloc under `setarch -R`. */
static unsigned long range_addr, range_len;

static unsigned long range_resident_kb(void)
{
	static unsigned char vec[1 << 16];
	long page = sysconf(_SC_PAGESIZE);
	unsigned long pages = (range_len + page - 1) / page, n = 0;
	if (!range_len || pages > sizeof(vec) || mincore((void *)range_addr, range_len, vec))
		return 0;
	for (unsigned long i = 0; i < pages; i++)
		n += vec[i] & 1;
	return n * page / 1024;
}
static uint64_t trace_every; /* RSS_TRACE=K: print RSS every K messages */

static void sample(struct samples *s, uint64_t done, uint64_t n)
{
	if (trace_every && done % trace_every < BATCH)
		fprintf(stderr, "trace %d: %" PRIu64 " messages, %.2f s, RSS %" PRIu64 "\n", (int)getpid(), done,
			now() - t_start, rss());
	uint64_t marks[2] = {n / 10, n / 2};
	for (int i = 0; i < 2; i++)
		if (s->rss[i] == 0 && done >= marks[i]) {
			s->rss[i] = rss();
			s->at[i] = done;
			s->when[i] = now() - t_start;
			s->range_kb[i] = range_resident_kb();
			if (want_smaps)
				snapshot_maps(i);
		}
}

static void sample_end(struct samples *s, uint64_t done)
{
	s->rss[2] = rss();
	s->at[2] = done;
	s->when[2] = now() - t_start;
	s->range_kb[2] = range_resident_kb();
	if (want_smaps)
		snapshot_maps(2);
}

static void describe(const char *who, const struct samples *s, int nthreads, char *out, size_t out_len)
{
	double per_msg_50 = ((double)s->rss[1] - (double)s->rss[0]) / (double)(s->at[1] - s->at[0]);
	double per_msg_100 = ((double)s->rss[2] - (double)s->rss[0]) / (double)(s->at[2] - s->at[0]);
	snprintf(out, out_len,
		 "%s: RSS at 10 %% %" PRIu64 ", 50 %% %" PRIu64 ", 100 %% %" PRIu64
		 " bytes; growth 10->50 %% %+.1f B/msg (%+.1f %%), 10->100 %% %+.1f B/msg; %d threads; "
		 "marks at %.1f, %.1f, %.1f s",
		 who, s->rss[0], s->rss[1], s->rss[2], per_msg_50,
		 100.0 * ((double)s->rss[1] - (double)s->rss[0]) / (double)s->rss[0], per_msg_100, nthreads,
		 s->when[0], s->when[1], s->when[2]);
	if (range_len)
		snprintf(out + strlen(out), out_len - strlen(out),
			 "\n%s: RSS_RANGE %#lx+%lu resident at 10 %%, 50 %%, 100 %%: %lu, %lu, %lu kB", who,
			 range_addr, range_len, s->range_kb[0], s->range_kb[1], s->range_kb[2]);
}

/* ---- the out-of-band channel (a socketpair) ---- */

static void oob_send(int sock, const void *data, size_t len)
{
	if (write(sock, &len, sizeof(len)) != sizeof(len) || write(sock, data, len) != (ssize_t)len) {
		perror("oob write");
		exit(2);
	}
}

static size_t oob_recv(int sock, void *data, size_t cap)
{
	size_t len;
	if (read(sock, &len, sizeof(len)) != sizeof(len) || len > cap) {
		fprintf(stderr, "oob read failed\n");
		exit(2);
	}
	size_t got = 0;
	while (got < len) {
		ssize_t r = read(sock, (char *)data + got, len - got);
		if (r <= 0) {
			fprintf(stderr, "oob read failed\n");
			exit(2);
		}
		got += (size_t)r;
	}
	return len;
}

/* ---- libfabric ---- */

struct side {
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_cq *cq;
	struct fid_av *av;
	struct fid_ep *ep;
	int local_mr, ep_mr;
	uint64_t eagain;      /* posts that returned -FI_EAGAIN */
	uint64_t during_retry; /* completions read while retrying such a post */
};

/* The same hints as soak.rs's open(): RDM, FI_MSG, FI_CONTEXT|FI_CONTEXT2,
 * the five MR mode bits, tx/rx size 4 * BATCH; CQ of 4 * BATCH entries in
 * the msg format, no wait object; AV type unspecified. */
static void open_side(struct side *s, const char *prov)
{
	memset(s, 0, sizeof(*s));
	struct fi_info *hints = fi_allocinfo(), *all;
	hints->ep_attr->type = FI_EP_RDM;
	hints->caps = FI_MSG;
	hints->mode = FI_CONTEXT | FI_CONTEXT2;
	hints->domain_attr->mr_mode =
		FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
	hints->tx_attr->size = 4 * BATCH;
	hints->rx_attr->size = 4 * BATCH;
	hints->fabric_attr->prov_name = strdup(prov);
	const char *node = strcmp(prov, "shm") ? "127.0.0.1" : NULL;
	CHECK(fi_getinfo(FI_VERSION(1, 17), node, NULL, node ? FI_SOURCE : 0, hints, &all));
	fi_freeinfo(hints);
	for (struct fi_info *i = all; i; i = i->next)
		if (!strcmp(i->fabric_attr->prov_name, prov)) {
			s->info = fi_dupinfo(i);
			break;
		}
	fi_freeinfo(all);
	if (!s->info) {
		fprintf(stderr, "%s: no RDM endpoint\n", prov);
		exit(2);
	}
	s->local_mr = (s->info->domain_attr->mr_mode & FI_MR_LOCAL) != 0;
	s->ep_mr = (s->info->domain_attr->mr_mode & FI_MR_ENDPOINT) != 0;
	CHECK(fi_fabric(s->info->fabric_attr, &s->fabric, NULL));
	CHECK(fi_domain(s->fabric, s->info, &s->domain, NULL));
	struct fi_cq_attr cq_attr = {.size = 4 * BATCH, .format = FI_CQ_FORMAT_MSG, .wait_obj = FI_WAIT_NONE};
	CHECK(fi_cq_open(s->domain, &cq_attr, &s->cq, NULL));
	struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};
	CHECK(fi_av_open(s->domain, &av_attr, &s->av, NULL));
	CHECK(fi_endpoint(s->domain, s->info, &s->ep, NULL));
	CHECK(fi_ep_bind(s->ep, &s->cq->fid, FI_TRANSMIT | FI_RECV));
	CHECK(fi_ep_bind(s->ep, &s->av->fid, 0));
	CHECK(fi_enable(s->ep));
}

static void close_side(struct side *s)
{
	CHECK(fi_close(&s->ep->fid));
	CHECK(fi_close(&s->av->fid));
	CHECK(fi_close(&s->cq->fid));
	CHECK(fi_close(&s->domain->fid));
	CHECK(fi_close(&s->fabric->fid));
	fi_freeinfo(s->info);
}

/* A buffer of its own heap allocation (as a Rust Buf is), registered for
 * send and receive when the provider wants FI_MR_LOCAL. */
struct buf {
	uint8_t *data;
	struct fid_mr *mr;
	void *desc;
	struct fi_context2 ctx;
};

static void fix(struct side *s, struct buf *b, size_t cap)
{
	b->data = calloc(1, cap);
	b->mr = NULL;
	b->desc = NULL;
	if (!b->data)
		exit(2);
	if (!s->local_mr)
		return;
	CHECK(fi_mr_reg(s->domain, b->data, cap, FI_SEND | FI_RECV, 0, 0, 0, &b->mr, NULL));
	if (s->ep_mr) {
		CHECK(fi_mr_bind(b->mr, &s->ep->fid, 0));
		CHECK(fi_mr_enable(b->mr));
	}
	b->desc = fi_mr_desc(b->mr);
}

static void unfix(struct buf *b)
{
	if (b->mr)
		CHECK(fi_close(&b->mr->fid));
	free(b->data);
}

/* One completion, or 0 if none; exits on an error completion. */
static int poll_one(struct side *s, struct fi_cq_msg_entry *e, const char *who)
{
	ssize_t r = fi_cq_read(s->cq, e, 1);
	if (r == 1)
		return 1;
	if (r == -FI_EAGAIN)
		return 0;
	struct fi_cq_err_entry err = {0};
	if (r == -FI_EAVAIL && fi_cq_readerr(s->cq, &err, 0) == 1)
		fprintf(stderr, "%s: completion error: %s (%d)\n", who, fi_strerror(err.err), err.err);
	else
		fprintf(stderr, "%s: fi_cq_read: %s\n", who, fi_strerror((int)-r));
	exit(1);
}

/* ---- the receiver (the forked child) ---- */

static int receiver(const char *prov, int sock, uint64_t n)
{
	struct side s;
	open_side(&s, prov);
	char name[256], theirs[256];
	size_t len = sizeof(name);
	CHECK(fi_getname(&s.ep->fid, name, &len));
	oob_send(sock, name, len);
	len = oob_recv(sock, theirs, sizeof(theirs));
	fi_addr_t sender;
	if (fi_av_insert(s.av, theirs, 1, &sender, 0, NULL) != 1)
		exit(2);

	static struct buf rx[BATCH];
	for (int i = 0; i < BATCH; i++) {
		fix(&s, &rx[i], MAX_LEN);
		CHECK(fi_recv(s.ep, rx[i].data, MAX_LEN, rx[i].desc, FI_ADDR_UNSPEC, &rx[i].ctx));
	}
	oob_send(sock, "ready", 5);

	uint64_t *seen = calloc((n + 63) / 64, sizeof(uint64_t));
	uint64_t count = 0, dups = 0, bad = 0;
	char first_bad[128] = "";
	struct samples smp = {{0}};
	int arrived[BATCH];
	size_t arrived_len[BATCH];
	while (count < n) {
		uint64_t batch_end = count + BATCH < n ? count + BATCH : n;
		int got = 0;
		double last = now();
		struct fi_cq_msg_entry e;
		while (count + (uint64_t)got < batch_end) {
			if (!poll_one(&s, &e, "receiver")) {
				if (now() - last > STALL) {
					fprintf(stderr, "receiver: stalled at %" PRIu64 "\n", count + got);
					exit(1);
				}
				continue;
			}
			last = now();
			struct buf *b = NULL;
			for (int i = 0; i < BATCH; i++)
				if (e.op_context == &rx[i].ctx)
					b = &rx[i];
			if (!b || !(e.flags & FI_RECV)) {
				fprintf(stderr, "receiver: unexpected completion (flags %#" PRIx64 ")\n", e.flags);
				exit(1);
			}
			arrived_len[got] = e.len;
			arrived[got++] = (int)(b - rx);
		}
		for (int k = 0; k < got; k++) {
			struct buf *b = &rx[arrived[k]];
			char why[128];
			int64_t seq = check(b->data, arrived_len[k], why, sizeof(why));
			if (seq >= 0 && (uint64_t)seq < n) {
				if (seen[seq / 64] & (1ULL << (seq % 64)))
					dups++;
				seen[seq / 64] |= 1ULL << (seq % 64);
			} else {
				if (seq >= 0)
					snprintf(why, sizeof(why), "message %" PRId64 " past the end", seq);
				if (!bad++)
					snprintf(first_bad, sizeof(first_bad), "%s", why);
			}
			count++;
			CHECK(fi_recv(s.ep, b->data, MAX_LEN, b->desc, FI_ADDR_UNSPEC, &b->ctx));
		}
		sample(&smp, count, n);
		/* The acknowledgement: the count so far, injected (no completion). */
		uint8_t ack[8];
		put32(ack, (uint32_t)count);
		put32(ack + 4, (uint32_t)(count >> 32));
		double start = now();
		ssize_t r;
		while ((r = fi_inject(s.ep, ack, sizeof(ack), sender)) == -FI_EAGAIN) {
			s.eagain++;
			/* progress only; a receive completing here would be an error */
			if (poll_one(&s, &e, "receiver")) {
				fprintf(stderr, "receiver: completion while injecting\n");
				exit(1);
			}
			if (now() - start > STALL) {
				fprintf(stderr, "receiver: fi_inject stalled\n");
				exit(1);
			}
		}
		if (r)
			CHECK(r);
	}
	sample_end(&smp, count);
	uint64_t missing = 0;
	for (uint64_t q = 0; q < n; q++)
		if (!(seen[q / 64] & (1ULL << (q % 64))))
			missing++;
	char text[512];
	int nthreads = threads();
	describe("receiver", &smp, nthreads, text, sizeof(text));
	char report[1024];
	snprintf(report, sizeof(report),
		 "receiver: received %" PRIu64 ", missing %" PRIu64 ", duplicated %" PRIu64 ", corrupted %" PRIu64
		 "%s%s; fi_inject EAGAIN %" PRIu64 "\n%s",
		 count, missing, dups, bad, bad ? "; first: " : "", first_bad, s.eagain, text);
	if (want_smaps) {
		fprintf(stderr, "receiver mappings that grew (pid %d):\n", (int)getpid());
		report_maps("receiver", stderr);
	}
	oob_send(sock, report, strlen(report));
	char done[8];
	oob_recv(sock, done, sizeof(done));
	for (int i = 0; i < BATCH; i++)
		fi_cancel(&s.ep->fid, &rx[i].ctx);
	close_side(&s);
	for (int i = 0; i < BATCH; i++)
		unfix(&rx[i]);
	free(seen);
	return count == n && missing == 0 && dups == 0 && bad == 0 ? 0 : 1;
}

/* ---- the sender (the parent) ---- */

static int sender(const char *prov, int sock, uint64_t n, pid_t child)
{
	struct side s;
	open_side(&s, prov);
	char name[256], theirs[256];
	size_t len = oob_recv(sock, theirs, sizeof(theirs));
	fi_addr_t receiver;
	if (fi_av_insert(s.av, theirs, 1, &receiver, 0, NULL) != 1)
		exit(2);
	len = sizeof(name);
	CHECK(fi_getname(&s.ep->fid, name, &len));
	oob_send(sock, name, len);
	char ready[8];
	oob_recv(sock, ready, sizeof(ready));

	static struct buf tx[BATCH];
	for (int i = 0; i < BATCH; i++)
		fix(&s, &tx[i], MAX_LEN);
	struct buf ack;
	fix(&s, &ack, 64);
	CHECK(fi_recv(s.ep, ack.data, 64, ack.desc, FI_ADDR_UNSPEC, &ack.ctx));

	double t0 = now();
	uint64_t seq = 0;
	struct samples smp = {{0}};
	while (seq < n) {
		int batch = n - seq < BATCH ? (int)(n - seq) : BATCH;
		int sent = 0, acked = 0;
		struct fi_cq_msg_entry e;
		for (int i = 0; i < batch; i++) {
			size_t l = fill(seq + (uint64_t)i, tx[i].data);
			double start = now();
			ssize_t r;
			while ((r = fi_send(s.ep, tx[i].data, l, tx[i].desc, receiver, &tx[i].ctx)) == -FI_EAGAIN) {
				s.eagain++;
				if (poll_one(&s, &e, "sender")) {
					s.during_retry++;
					if (e.op_context == &ack.ctx)
						acked = 1;
					else
						sent++;
				}
				if (now() - start > STALL) {
					fprintf(stderr, "sender: fi_send stalled\n");
					exit(1);
				}
			}
			if (r)
				CHECK(r);
		}
		seq += (uint64_t)batch;
		double last = now();
		while (!(sent == batch && acked)) {
			if (!poll_one(&s, &e, "sender")) {
				if (now() - last > STALL) {
					fprintf(stderr, "sender: stalled at %" PRIu64 "\n", seq);
					exit(1);
				}
				continue;
			}
			last = now();
			if (e.op_context == &ack.ctx)
				acked = 1;
			else if (e.flags & FI_SEND)
				sent++;
			else {
				fprintf(stderr, "sender: unexpected completion (flags %#" PRIx64 ")\n", e.flags);
				exit(1);
			}
		}
		uint64_t count = get32(ack.data) | (uint64_t)get32(ack.data + 4) << 32;
		if (count != seq) {
			fprintf(stderr, "sender: the receiver acknowledged %" PRIu64 " of %" PRIu64 "\n", count, seq);
			exit(1);
		}
		CHECK(fi_recv(s.ep, ack.data, 64, ack.desc, FI_ADDR_UNSPEC, &ack.ctx));
		sample(&smp, seq, n);
	}
	sample_end(&smp, seq);
	double elapsed = now() - t0;
	int nthreads = threads();
	if (want_smaps) {
		fprintf(stderr, "sender mappings that grew (pid %d):\n", (int)getpid());
		report_maps("sender", stderr);
	}

	char report[1024];
	size_t rl = oob_recv(sock, report, sizeof(report) - 1);
	report[rl] = 0;
	oob_send(sock, "done", 4);
	int status;
	waitpid(child, &status, 0);

	char text[512];
	describe("sender  ", &smp, nthreads, text, sizeof(text));
	printf("%s: %" PRIu64 " messages in %.1f s; fi_send EAGAIN %" PRIu64 " (completions read meanwhile %" PRIu64
	       ")\n%s\n%s\n",
	       prov, n, elapsed, s.eagain, s.during_retry, report, text);
	fi_cancel(&s.ep->fid, &ack.ctx);
	close_side(&s);
	for (int i = 0; i < BATCH; i++)
		unfix(&tx[i]);
	unfix(&ack);
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		printf("receiver: failed (status %#x)\n", status);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3 || strtoull(argv[2], NULL, 10) < 20) {
		fprintf(stderr, "usage: %s PROVIDER N (N >= 20)\n", argv[0]);
		return 2;
	}
	uint64_t n = strtoull(argv[2], NULL, 10);
	want_smaps = getenv("RSS_SMAPS") && atoi(getenv("RSS_SMAPS"));
	t_start = now();
	if (getenv("RSS_RANGE"))
		sscanf(getenv("RSS_RANGE"), "%lx:%lu", &range_addr, &range_len);
	trace_every = getenv("RSS_TRACE") ? strtoull(getenv("RSS_TRACE"), NULL, 10) : 0;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return 2;
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		return 2;
	if (pid == 0) {
		close(sv[0]);
		_exit(receiver(argv[1], sv[1], n));
	}
	close(sv[1]);
	return sender(argv[1], sv[0], n, pid);
}
