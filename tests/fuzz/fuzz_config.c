/* libFuzzer target: qagw's configuration loader (gateway/config.c) on
 * arbitrary file contents. It must never crash, and must either accept the
 * file or say what is wrong with a message naming the file. */
#include "gateway/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct gw_config conf;
	static int fd = -1;
	static char path[64];
	char err[1024];
	if (fd < 0) {
		fd = memfd_create("qagw-fuzz-config", 0);
		if (fd < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
		abort();
	err[0] = 0;
	if (gw_config_load(path, &conf, err, sizeof(err)) != 0 && !strstr(err, path))
		abort(); /* every error names the file */
	return 0;
}
