/* The wire side of the agent tests' fake QASync v1 servers (test_agent_run.c
 * speaks over a socketpair, test_agent_failover.c over loopback TCP): one
 * implementation of blocking frame I/O and of the loopback listener, so that
 * the two fakes differ only in what they answer. */
#ifndef FAKE_QS_H
#define FAKE_QS_H

#include "proto/qs_codec.h"

#include <stddef.h>
#include <stdint.h>

/* All n bytes (EINTR retried; no SIGPIPE); 0, or -1 when the peer is gone. */
int fq_write_all(int fd, const void *p, size_t n);
int fq_read_all(int fd, void *p, size_t n);
/* Encodes and writes one frame; 0 or -1. */
int fq_send(int fd, const struct qs_frame *f);
/* Reads one frame into buf (cap bytes: also the frame cap) and decodes it
 * into *out (release with qs_frame_release); 0, or -1 (closed, too long,
 * undecodable). */
int fq_recv(int fd, uint8_t *buf, uint32_t cap, struct qs_frame *out);
/* A socket listening on 127.0.0.1 at a free port, written to *port; -1 on
 * failure. */
int fq_listen(uint16_t *port);

#endif
