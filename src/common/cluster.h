/*
 * cluster.h - the cluster map: servers, targets, buckets, chunk size and the secret, as
 * written to cluster.conf at format time (mode 0600: it holds the secret). Clients and
 * servers read the same file; placement functions here are what every client uses to
 * find a bucket's server and a chunk's target without asking anyone.
 */
#ifndef AQ_CLUSTER_H
#define AQ_CLUSTER_H
#include "common/common.h"

#define CLUSTER_SERVERS_MAX 64
#define CLUSTER_SECRET_SIZE 32

struct cluster_server { uint32_t id; char addr[128]; uint16_t port; };
struct cluster_target { uint32_t id; uint32_t server; uint32_t weight; };

struct cluster_map {
	char cluster_id[40];
	uint8_t secret[CLUSTER_SECRET_SIZE];
	uint32_t epoch;
	uint32_t nbuckets;
	uint32_t chunk_size;
	uint32_t nservers, ntargets;
	struct cluster_server servers[CLUSTER_SERVERS_MAX];
	struct cluster_target targets[AQ_TARGETS_MAX];
};

/* Parses a cluster.conf. Returns 0, -ENOENT, -EACCES, or -EINVAL with a message in err. */
int cluster_load(const char *path, struct cluster_map *m, char *err, size_t err_size);
/* Writes it atomically with mode 0600. */
int cluster_save(const char *path, const struct cluster_map *m);
/* A fresh single-server map: random id and secret, ntargets targets on server 0. */
void cluster_init_single(struct cluster_map *m, const char *host, uint16_t port, uint32_t ntargets,
			 uint32_t nbuckets, uint32_t chunk_size);
/* Which cluster file a command uses: explicit, else $AQ_CLUSTER, else ./var/cluster.conf. */
const char *cluster_default_path(const char *explicit_path);

/* The target that holds chunk (ino, idx): weighted rendezvous hashing over all targets. */
uint32_t cluster_chunk_target(const struct cluster_map *m, uint64_t ino, uint32_t idx);
/* The server that holds a bucket (buckets spread round-robin over servers). */
uint32_t cluster_bucket_server(const struct cluster_map *m, uint32_t bucket);
const struct cluster_server *cluster_server_by_id(const struct cluster_map *m, uint32_t id);
const struct cluster_target *cluster_target_by_id(const struct cluster_map *m, uint32_t id);

int hex_decode(const char *hex, uint8_t *out, size_t n);
void hex_encode(const uint8_t *in, size_t n, char *out);
int random_bytes(void *buf, size_t n);

#endif
