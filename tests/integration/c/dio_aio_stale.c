/*
 * dio_aio_stale FILE: rewrites 640 KiB of FILE again and again with O_DIRECT through
 * Linux AIO (io_submit), alternating two patterns, while two threads read the file
 * through the page cache; after each write a fresh buffered read must show the new
 * pattern (xfstests' generic/451, aio-dio-cycle-write). Exits 0 after 3 s or 400
 * writes, 1 when a read shows stale bytes, 2 on a setup error.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SIZE (640 << 10)

static const char *path;
static volatile int stop;

static void *reader(void *arg)
{
	(void)arg;
	char *buf = malloc(SIZE);
	while (!stop) {
		int fd = open(path, O_RDONLY);
		if (fd >= 0) {
			if (pread(fd, buf, SIZE, 0) < 0)
				perror("reader pread");
			close(fd);
		}
	}
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	path = argv[1];
	char *pat[2], *cmp = malloc(SIZE);
	if (posix_memalign((void **)&pat[0], 4096, SIZE) || posix_memalign((void **)&pat[1], 4096, SIZE))
		return 2;
	memset(pat[0], 0x55, SIZE);
	memset(pat[1], 0xaa, SIZE);
	int fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_DIRECT, 0644);
	aio_context_t ctx = 0;
	if (fd < 0 || pwrite(fd, pat[0], SIZE, 0) != SIZE || syscall(SYS_io_setup, 1, &ctx)) {
		perror("setup");
		return 2;
	}
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, reader, NULL);
	time_t end = time(NULL) + 3;
	int rc = 0;
	for (int i = 1; i <= 400 && time(NULL) < end && !rc; i++) {
		struct iocb cb = {.aio_lio_opcode = IOCB_CMD_PWRITE, .aio_fildes = (unsigned)fd,
				  .aio_buf = (unsigned long)pat[i % 2], .aio_nbytes = SIZE};
		struct iocb *cbs[1] = {&cb};
		struct io_event ev;
		if (syscall(SYS_io_submit, ctx, 1, cbs) != 1 || syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) != 1 ||
		    ev.res != SIZE) {
			perror("aio write");
			rc = 2;
			break;
		}
		int rfd = open(path, O_RDONLY);
		if (rfd < 0 || pread(rfd, cmp, SIZE, 0) != SIZE) {
			perror("check read");
			rc = 2;
		} else if (memcmp(cmp, pat[i % 2], SIZE)) {
			size_t at = 0;
			while (cmp[at] == pat[i % 2][at])
				at++;
			printf("write %d: stale byte 0x%02x at offset %zu\n", i, (unsigned char)cmp[at], at);
			rc = 1;
		}
		if (rfd >= 0)
			close(rfd);
	}
	stop = 1;
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	return rc;
}
