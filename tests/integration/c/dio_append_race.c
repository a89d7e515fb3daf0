/*
 * dio_append_race FILE: appends 64 blocks of 1 MiB of 'a' with O_DIRECT from a buffer
 * that is 512-aligned but not page-aligned (the kernel cuts each write into two FUSE
 * requests), while a second thread reads each block with O_DIRECT as soon as it has any
 * bytes. Every byte read must be 'a'; a zero means the size covered bytes not yet there.
 * Exits 0, or 1 with the block and offset of the first bad byte (as xfstests' generic/465,
 * aio-dio-append-write-read-race, does).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLK (1 << 20)
#define NBLK 64

static int rfd;
static char *rbuf;
static off_t at;
static ssize_t got;
static volatile int ready;

static void *reader(void *arg)
{
	(void)arg;
	memset(rbuf, 'b', BLK);
	ready = 1;
	do
		got = pread(rfd, rbuf, BLK, at);
	while (got <= 0);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	int wfd = open(argv[1], O_CREAT | O_TRUNC | O_WRONLY | O_DIRECT, 0644);
	rfd = open(argv[1], O_RDONLY | O_DIRECT);
	char *w;
	if (wfd < 0 || rfd < 0 || posix_memalign((void **)&w, 4096, BLK + 4096) ||
	    posix_memalign((void **)&rbuf, 4096, BLK)) {
		perror("setup");
		return 2;
	}
	char *wbuf = w + 512;
	memset(wbuf, 'a', BLK);
	for (int i = 0; i < NBLK; i++) {
		pthread_t t;
		at = (off_t)i * BLK;
		ready = 0;
		pthread_create(&t, NULL, reader, NULL);
		while (!ready)
			usleep(1);
		if (pwrite(wfd, wbuf, BLK, at) != BLK) {
			perror("pwrite");
			return 2;
		}
		pthread_join(t, NULL);
		for (ssize_t j = 0; j < got; j++)
			if (rbuf[j] != 'a') {
				printf("block %d offset %zd: 0x%02x\n", i, j, (unsigned char)rbuf[j]);
				return 1;
			}
	}
	return 0;
}
