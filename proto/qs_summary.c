/* One line about a frame, for logs; see qs_frame_summary in qs_codec.h. */
#include "proto/qs_codec.h"

#include <stdio.h>
#include <string.h>

void qs_frame_summary(const struct qs_frame *f, char *buf, size_t n)
{
	const char *name = qs_type_name(f->type) ? qs_type_name(f->type) : "?";
	int used = 0;
	switch (f->type) {
	case QS_HELLO:
		used = snprintf(buf, n, "HELLO version=%u agent=%.*s primary=\"%.*s\" flags=%u",
		                (unsigned)f->u.hello.version, (int)f->u.hello.agent_id.len,
		                f->u.hello.agent_id.ptr, (int)f->u.hello.primary.len,
		                f->u.hello.primary.ptr, (unsigned)f->u.hello.flags);
		break;
	case QS_WELCOME:
		used = snprintf(buf, n,
		                "WELCOME server=%.*s primary=\"%.*s\" on_primary=%u servers=%u "
		                "max_frame=%u max_batch=%u heartbeat_s=%u",
		                (int)f->u.welcome.server.len, f->u.welcome.server.ptr,
		                (int)f->u.welcome.primary.len, f->u.welcome.primary.ptr,
		                (unsigned)f->u.welcome.on_primary, (unsigned)f->u.welcome.n_servers,
		                (unsigned)f->u.welcome.max_frame, (unsigned)f->u.welcome.max_batch,
		                (unsigned)f->u.welcome.heartbeat_s);
		break;
	case QS_UPLOAD:
		used = snprintf(buf, n, "UPLOAD batch=%u count=%u", (unsigned)f->u.upload.batch,
		                (unsigned)f->u.upload.count);
		break;
	case QS_UPLOAD_ACK:
		used = snprintf(buf, n, "UPLOAD_ACK batch=%u count=%u",
		                (unsigned)f->u.upload_ack.batch, (unsigned)f->u.upload_ack.count);
		break;
	case QS_FETCH:
		used = snprintf(buf, n, "FETCH max_count=%u max_bytes=%u",
		                (unsigned)f->u.fetch.max_count, (unsigned)f->u.fetch.max_bytes);
		break;
	case QS_DELIVER:
		used = snprintf(buf, n, "DELIVER count=%u more=%u", (unsigned)f->u.deliver.count,
		                (unsigned)f->u.deliver.more);
		for (uint16_t i = 0; i < f->u.deliver.count && used > 0 && (size_t)used < n; i++)
			used += snprintf(buf + used, n - (size_t)used, "%s%llu", i ? "," : " seq=",
			                 (unsigned long long)f->u.deliver.msgs[i].seq);
		break;
	case QS_DELIVER_ACK:
		used = snprintf(buf, n, "DELIVER_ACK count=%u", (unsigned)f->u.deliver_ack.count);
		for (uint16_t i = 0; i < f->u.deliver_ack.count && used > 0 && (size_t)used < n;
		     i++)
			used += snprintf(buf + used, n - (size_t)used, "%s%llu", i ? "," : " seq=",
			                 (unsigned long long)f->u.deliver_ack.seqs[i]);
		break;
	case QS_PUSH:
		used = snprintf(buf, n, "PUSH push_id=%llu pending=%u",
		                (unsigned long long)f->u.push.push_id, (unsigned)f->u.push.pending);
		break;
	case QS_PUSH_ACK:
		used = snprintf(buf, n, "PUSH_ACK push_id=%llu", (unsigned long long)f->u.push_id);
		break;
	case QS_PING:
	case QS_PONG:
		used = snprintf(buf, n, "%s nonce=%llu", name, (unsigned long long)f->u.nonce);
		break;
	case QS_ERROR:
		used = snprintf(buf, n, "ERROR code=%u (%s) retryable=%u text=\"%.*s\"",
		                (unsigned)f->u.error.code, qs_err_name(f->u.error.code),
		                (unsigned)f->u.error.retryable,
		                (int)(f->u.error.text.len > 300 ? 300 : f->u.error.text.len),
		                f->u.error.text.ptr);
		break;
	case QS_REASSIGN:
		used = snprintf(buf, n, "REASSIGN primary=\"%.*s\" servers=%u",
		                (int)f->u.reassign.primary.len, f->u.reassign.primary.ptr,
		                (unsigned)f->u.reassign.n_servers);
		break;
	case QS_STATUS:
		used = snprintf(buf, n, "STATUS count=%u", (unsigned)f->u.status.count);
		break;
	default:
		used = snprintf(buf, n, "%s", name);
		break;
	}
	if (used < 0)
		snprintf(buf, n, "%s", name);
	else if ((size_t)used >= n && n > 4)
		memcpy(buf + n - 4, "...", 4); /* a long seq list was cut */
}
