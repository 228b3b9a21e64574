/* Placeholder while the mode is being written (issue 7). */
#include "bench/qb.h"

int qb_mode_nats_ingest(const struct qb_opts *o)
{
	fprintf(stderr, "qabench: mode not built yet\n");
	return 2;
}
