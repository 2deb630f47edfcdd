/*
 * worker_trace.h - what worker_fast.c asks of worker_trace.c beyond the public trace
 * functions of lsca_worker_fast.h: a new client's empty stream, and letting go of it all.
 */
#ifndef LSCA_WORKER_TRACE_H
#define LSCA_WORKER_TRACE_H

#include "lsca_worker_fast.h"

void lsca_trace_init(struct lsca_client_fast *c);
/* Held records, the stream (its unsent records kept as leftovers when there is room) and
 * its lock. */
void lsca_trace_free(struct lsca_client_fast *c);

#endif
