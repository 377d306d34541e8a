/*
 * rxd_cancel_strerror.c - fi_cq_strerror on the error entry of a cancelled
 * receive whose endpoint has closed, with plain libfabric.
 *
 * One process opens an RDM endpoint, posts a tagged receive, cancels it
 * (fi_cancel), closes the endpoint (the queue stays open, as when an async
 * driver still reads the queue of an endpoint just closed), reads the error
 * entry (fi_cq_readerr) and asks the provider to describe it:
 * fi_cq_strerror(cq, prov_errno, err_data, buf, len), as fi_cq(3) says to.
 *
 * Build: cc -O2 -Wall rxd_cancel_strerror.c -lfabric -o /tmp/rxd_cancel_strerror
 * Run:   /tmp/rxd_cancel_strerror          (or name a provider: ... "tcp;ofi_rxm")
 *
 * Observed on this machine (Debian 12, libfabric 1.17.0-3):
 *
 * udp;ofi_rxd: error entry: err 125 (Operation canceled), prov_errno 0, err_data (nil), err_data_size 0
 * udp;ofi_rxd: fi_cq_strerror(prov_errno 0, err_data (nil))...
 * rxd_cancel_strerror:12796 terminated with signal 11 at PC=7f3e2f66553b SP=7fff03914c30.  Backtrace:
 * /lib/x86_64-linux-gnu/libfabric.so.1(+0xc553b)[0x7f3e2f66553b]
 *
 * tcp;ofi_rxm (prov_errno -125) crashes the same way; shm answers
 * "Operation canceled". With the endpoint still open, rxd answers "Success".
 * The libfabric offset +0xc553b is the frame of the crash seen from Rust
 * (tests/tests/transport.rs, a_reading_future_left_unpolled_holds_up_no_other,
 * whose cancelled receive's entry the driver read after the node closed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(int argc, char **argv)
{
	const char *prov = argc > 1 ? argv[1] : "udp;ofi_rxd";
	struct fi_info *hints = fi_allocinfo(), *info;
	hints->ep_attr->type = FI_EP_RDM;
	hints->caps = FI_TAGGED;
	hints->fabric_attr->prov_name = strdup(prov);
	CHECK(fi_getinfo(FI_VERSION(1, 17), "127.0.0.1", NULL, 0, hints, &info));

	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_cq *cq;
	struct fid_av *av;
	struct fid_ep *ep;
	CHECK(fi_fabric(info->fabric_attr, &fabric, NULL));
	CHECK(fi_domain(fabric, info, &domain, NULL));
	struct fi_cq_attr cq_attr = { .size = 64, .format = FI_CQ_FORMAT_TAGGED };
	CHECK(fi_cq_open(domain, &cq_attr, &cq, NULL));
	struct fi_av_attr av_attr = { .type = FI_AV_TABLE };
	CHECK(fi_av_open(domain, &av_attr, &av, NULL));
	CHECK(fi_endpoint(domain, info, &ep, NULL));
	CHECK(fi_ep_bind(ep, &av->fid, 0));
	CHECK(fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV));
	CHECK(fi_enable(ep));

	static char buf[64];
	static int context;
	CHECK(fi_trecv(ep, buf, sizeof buf, NULL, FI_ADDR_UNSPEC, 7, 0, &context));
	CHECK(fi_cancel(&ep->fid, &context));
	/* The endpoint goes first, the queue stays open (as when an async
	 * driver still reads the queue of an endpoint just closed). */
	CHECK(fi_close(&ep->fid));

	struct fi_cq_tagged_entry entry;
	ssize_t ret;
	do {
		ret = fi_cq_read(cq, &entry, 1);
	} while (ret == -FI_EAGAIN);
	if (ret != -FI_EAVAIL) {
		fprintf(stderr, "%s: fi_cq_read gave %zd, not -FI_EAVAIL\n", prov, ret);
		return 2;
	}
	struct fi_cq_err_entry err = { 0 };
	ret = fi_cq_readerr(cq, &err, 0);
	if (ret < 0) {
		fprintf(stderr, "%s: fi_cq_readerr: %s\n", prov, fi_strerror((int)-ret));
		return 2;
	}
	printf("%s: error entry: err %d (%s), prov_errno %d, err_data %p, err_data_size %zu\n", prov, err.err,
	       fi_strerror(err.err), err.prov_errno, err.err_data, err.err_data_size);
	printf("%s: fi_cq_strerror(prov_errno %d, err_data %p)...\n", prov, err.prov_errno, err.err_data);
	fflush(stdout);
	char text[256];
	const char *said = fi_cq_strerror(cq, err.prov_errno, err.err_data, text, sizeof text);
	printf("%s: fi_cq_strerror said: %s\n", prov, said ? said : "(null)");

	fi_close(&av->fid);
	fi_close(&cq->fid);
	fi_close(&domain->fid);
	fi_close(&fabric->fid);
	fi_freeinfo(info);
	fi_freeinfo(hints);
	return 0;
}
